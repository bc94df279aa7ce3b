//! Preparedness checks: will the evidence a responder needs exist when it is needed? Logs
//! kept across reboots, shell history with times, the audit daemon, and on EC2 the management
//! agents a team relies on. They warn, never fail (a collection still works), and the
//! collector compares them across a host's peers: a host that lacks what its peers have stands
//! out among them (issue #17). So each check's verdict depends only on the host's state, never
//! on timing.

use super::{check, in_root, SelftestOptions, Verdict};
use cairn_protocol::readiness::CheckResult;
use std::path::Path;

/// Most /proc entries looked at when searching for a daemon.
const MAX_PROCS: usize = 100_000;

pub fn checks(opts: &SelftestOptions) -> Vec<CheckResult> {
    let root = &opts.host_root;
    let running = daemons(root);
    let on_ec2 = crate::cloud::detect(&in_root(root, "/sys")) == Some(crate::cloud::Provider::Aws);
    vec![
        check("logs.persistent", || persistent_logs(root)),
        check("logs.shell_history", || shell_history(root)),
        check("logs.auditd", || auditd(&running)),
        check("mgmt.ssm_agent", || {
            management_agent(
                &running,
                on_ec2,
                "amazon-ssm-agent",
                "Session Manager and Run Command",
            )
        }),
        check("mgmt.cloudwatch_agent", || {
            management_agent(
                &running,
                on_ec2,
                "amazon-cloudwatch-agent",
                "CloudWatch logs and metrics",
            )
        }),
    ]
}

/// The program names (basename of argv[0], or comm) of the running processes.
fn daemons(root: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(in_root(root, "/proc")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten().take(MAX_PROCS) {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let argv0 = std::fs::read(e.path().join("cmdline"))
            .ok()
            .and_then(|c| c.split(|b| *b == 0).next().map(<[u8]>::to_vec))
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(&a).into_owned());
        let prog = match argv0 {
            Some(a) => a.rsplit('/').next().unwrap_or(&a).to_string(),
            None => match std::fs::read_to_string(e.path().join("comm")) {
                Ok(c) => c.trim().to_string(),
                Err(_) => continue,
            },
        };
        out.push(prog);
    }
    out.sort();
    out.dedup();
    out
}

/// `Storage=` in journald.conf (and its drop-ins), the last one set winning.
fn journald_storage(root: &Path) -> Option<String> {
    let mut files = vec![in_root(root, "/etc/systemd/journald.conf")];
    if let Ok(d) = std::fs::read_dir(in_root(root, "/etc/systemd/journald.conf.d")) {
        let mut extra: Vec<_> = d
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        extra.sort();
        files.extend(extra);
    }
    let mut storage = None;
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for l in text.lines() {
            if let Some(v) = l.trim().strip_prefix("Storage=") {
                storage = Some(v.trim().to_ascii_lowercase());
            }
        }
    }
    storage
}

fn persistent_logs(root: &Path) -> Verdict {
    let storage = journald_storage(root);
    let journal_dir = in_root(root, "/var/log/journal").is_dir();
    let journal = match storage.as_deref() {
        Some("persistent") => true,
        Some("volatile") | Some("none") => false,
        // auto (the default): persistent when /var/log/journal exists.
        _ => journal_dir,
    };
    let text_logs: Vec<&str> = ["/var/log/auth.log", "/var/log/secure"]
        .into_iter()
        .filter(|p| in_root(root, p).is_file())
        .collect();
    match (journal, text_logs.is_empty()) {
        (true, _) => Verdict::pass("the journal is kept on disk (/var/log/journal)"),
        (false, false) => Verdict::pass(format!(
            "the journal is not kept on disk, but {} is",
            text_logs.join(" and ")
        )),
        (false, true) => Verdict::warn(
            "no log of logins and sudo survives a reboot: the journal is not kept on disk and there is no auth.log or secure",
            "mkdir -p /var/log/journal and set Storage=persistent in /etc/systemd/journald.conf, then systemctl restart systemd-journald (or install rsyslog)",
        ),
    }
}

/// Whether a shell start-up file sets `HISTTIMEFORMAT` (bash writes `#epoch` lines then).
fn shell_history(root: &Path) -> Verdict {
    let mut files = vec![
        in_root(root, "/etc/profile"),
        in_root(root, "/etc/bash.bashrc"),
        in_root(root, "/etc/bashrc"),
    ];
    if let Ok(d) = std::fs::read_dir(in_root(root, "/etc/profile.d")) {
        let mut extra: Vec<_> = d.flatten().map(|e| e.path()).collect();
        extra.sort();
        files.extend(extra);
    }
    let setting = files.iter().find(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().any(|l| {
                let l = l.trim();
                !l.starts_with('#') && l.contains("HISTTIMEFORMAT=")
            })
        })
    });
    match setting {
        Some(_) => Verdict::pass("HISTTIMEFORMAT is set system-wide: bash history has times"),
        None => Verdict::warn(
            "HISTTIMEFORMAT is not set system-wide: bash history has commands but no times, so it cannot be put on a timeline",
            "echo 'export HISTTIMEFORMAT=\"%F %T \"' > /etc/profile.d/cairn-history.sh (and shopt -s histappend)",
        ),
    }
}

fn auditd(running: &[String]) -> Verdict {
    if running.iter().any(|p| p == "auditd") {
        Verdict::pass("auditd is running")
    } else {
        Verdict::warn(
            "auditd is not running: no audit log of execs, file access or privilege changes beyond what cairn's sensor keeps",
            "where your team relies on audit logs, install auditd and enable it (systemctl enable --now auditd)",
        )
    }
}

fn management_agent(running: &[String], on_ec2: bool, program: &str, what: &str) -> Verdict {
    let up = running.iter().any(|p| p == program);
    match (up, on_ec2) {
        (true, _) => Verdict::pass(format!("{program} is running")),
        (false, false) => Verdict::pass(format!(
            "{program} is not running (not an EC2 instance: not expected)"
        )),
        (false, true) => Verdict::warn(
            format!("{program} is not running: no {what} on this instance"),
            format!("if the fleet uses {what}, install {program} and start it (systemctl enable --now {program})"),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use cairn_protocol::readiness::CheckStatus;

    fn root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for p in [
            "etc/systemd",
            "etc/profile.d",
            "var/log",
            "proc/1",
            "proc/77",
        ] {
            std::fs::create_dir_all(d.path().join(p)).unwrap();
        }
        d
    }

    #[test]
    fn logs_are_persistent_through_the_journal_or_a_text_log() {
        let d = root();
        let r = d.path();
        assert_eq!(persistent_logs(r).status, CheckStatus::Warn);
        std::fs::write(r.join("var/log/auth.log"), "").unwrap();
        assert_eq!(persistent_logs(r).status, CheckStatus::Pass);
        std::fs::remove_file(r.join("var/log/auth.log")).unwrap();
        std::fs::create_dir_all(r.join("var/log/journal")).unwrap();
        assert_eq!(persistent_logs(r).status, CheckStatus::Pass);
        // The directory exists but journald is told to keep nothing on disk.
        std::fs::write(
            r.join("etc/systemd/journald.conf"),
            "[Journal]\nStorage=volatile\n",
        )
        .unwrap();
        let v = persistent_logs(r);
        assert_eq!(v.status, CheckStatus::Warn);
        assert!(v.remediation.contains("Storage=persistent"));
    }

    #[test]
    fn shell_history_times_come_from_a_start_up_file() {
        let d = root();
        let r = d.path();
        std::fs::write(r.join("etc/profile"), "# HISTTIMEFORMAT=\"%F \"\n").unwrap();
        assert_eq!(shell_history(r).status, CheckStatus::Warn, "a comment");
        std::fs::write(
            r.join("etc/profile.d/h.sh"),
            "export HISTTIMEFORMAT=\"%F %T \"\n",
        )
        .unwrap();
        assert_eq!(shell_history(r).status, CheckStatus::Pass);
    }

    #[test]
    fn daemons_are_found_by_program_name() {
        let d = root();
        let r = d.path();
        std::fs::write(r.join("proc/1/cmdline"), b"/sbin/auditd\0-n\0").unwrap();
        std::fs::write(r.join("proc/77/cmdline"), b"").unwrap();
        std::fs::write(r.join("proc/77/comm"), "amazon-ssm-agent\n").unwrap();
        let running = daemons(r);
        assert_eq!(running, ["amazon-ssm-agent", "auditd"]);
        assert_eq!(auditd(&running).status, CheckStatus::Pass);
        assert_eq!(auditd(&[]).status, CheckStatus::Warn);
        let ssm = |run: &[String], ec2| {
            management_agent(run, ec2, "amazon-ssm-agent", "Session Manager").status
        };
        assert_eq!(ssm(&running, true), CheckStatus::Pass);
        assert_eq!(ssm(&[], true), CheckStatus::Warn);
        assert_eq!(
            ssm(&[], false),
            CheckStatus::Pass,
            "off EC2 it is not expected"
        );
    }
}
