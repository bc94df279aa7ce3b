//! `cargo xtask vm containment`: the agent's containment tests (`agent/tests/containment.rs`)
//! on Debian's 6.1 cloud kernel in the QEMU guest, as root there: host isolation by nftables
//! in veth-joined network namespaces, one cgroup cut by `cgroup_skb`, freeze, thaw and kill.
//!
//! The test binary and the agent go in as built on the host; the guest also gets the tools
//! the tests call, with their libraries, the kernel modules Debian builds as modules, cgroup v2,
//! bpffs and a /run for `ip netns`. Every test of the binary must say `ok` in the guest and none
//! may say it skipped: a test that returns early passes, so a pass alone proves nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use cairn_harness::describe_cmd;

use crate::procs::{cargo, ensure_tools, repo_root, section};
use crate::vm::{run_guest, tail, GuestSpec};

/// Host commands the tests run, with their Debian packages. Busybox's `ip` has no `netns`,
/// and `connect_from` opens its connection with bash's `/dev/tcp`. The tests' `sh -c` must be
/// Debian's dash, as on the host: busybox's sh runs its own `ip` and `ping` whatever PATH says.
const GUEST_TOOLS: &[(&str, &str)] = &[
    ("sh", "dash"),
    ("nft", "nftables"),
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("bash", "bash"),
];

/// What Debian's cloud kernel has as modules (their `depends=` come along): IPv6, the
/// nf_tables inet family with the payload, meta, cmp and set code the table uses, cgroup BPF
/// and the cgroup v2 freezer are built in.
const MODULES: &[&str] = &["veth", "nf_tables"];

/// The tests issue #15 names (host isolation, one cgroup isolated, freeze): a rename must fail
/// this check rather than drop them from it.
const NAMED: &[&str] = &[
    "host_isolation_cuts_everything_but_the_collector_and_the_allow_list",
    "isolating_one_cgroup_cuts_only_that_cgroup",
    "a_frozen_cgroup_stops_counting_can_be_read_and_thaws",
];

/// What the tests print when they return without testing (see `root()` in the tests).
const SKIP_WORD: &str = "skipped";

struct Built {
    tests: PathBuf,
    agent: PathBuf,
}

/// Builds the test binary and the agent it runs (`CARGO_BIN_EXE_cairn-agent`).
///
/// `--workspace --test containment` rather than `-p cairn-agent`: with the workspace's
/// feature unification, as `cargo xtask test` built them, so there nothing is rebuilt (alone,
/// `-p cairn-agent` unifies serde and futures differently and rebuilds the agent's whole
/// dependency tree). It also builds cairn-e2e's `containment` test, which is not run here.
fn build() -> Result<Built> {
    let mut c = cargo();
    c.args([
        "test",
        "--workspace",
        "--test",
        "containment",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let line = describe_cmd(&c);
    println!("$ {line}");
    let out = c
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !out.status.success() {
        bail!("`{line}` failed ({})", out.status);
    }
    let manifest = repo_root().join("agent/Cargo.toml");
    let (mut tests, mut agent) = (None, None);
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(m) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        if m["reason"] != "compiler-artifact"
            || m["manifest_path"].as_str().map(Path::new) != Some(manifest.as_path())
        {
            continue;
        }
        let Some(exe) = m["executable"].as_str() else {
            continue;
        };
        let kinds = m["target"]["kind"].as_array().cloned().unwrap_or_default();
        let kind = |k: &str| kinds.iter().any(|x| x == k);
        match m["target"]["name"].as_str() {
            Some("containment") if kind("test") => tests = Some(PathBuf::from(exe)),
            Some("cairn-agent") if kind("bin") => agent = Some(PathBuf::from(exe)),
            _ => {}
        }
    }
    Ok(Built {
        tests: tests.ok_or_else(|| anyhow!("`{line}` named no cairn-agent containment test"))?,
        agent: agent.ok_or_else(|| anyhow!("`{line}` named no cairn-agent binary"))?,
    })
}

/// The tests in the binary (`--list`), which need no root.
fn listed(tests: &Path) -> Result<Vec<String>> {
    let out = Command::new(tests)
        .args(["--list", "--format", "terse"])
        .output()
        .with_context(|| format!("cannot run {} --list", tests.display()))?;
    if !out.status.success() {
        bail!(
            "{} --list failed: {}",
            tests.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect();
    let missing: Vec<&str> = NAMED
        .iter()
        .copied()
        .filter(|n| !names.iter().any(|x| x == n))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the containment test binary lacks {missing:?} (renamed? update NAMED in xtask/src/vm_containment.rs)"
        );
    }
    Ok(names)
}

/// A host command's path: PATH, then where Debian puts admin tools.
fn host_command(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{name} is not installed on this machine"))
}

/// How each expected test ended in the guest.
#[derive(Debug, PartialEq)]
pub struct Verdict {
    pub name: String,
    /// `ok`, `FAILED`, `ignored`, or `missing` when the guest never reported it.
    pub result: String,
    /// The test printed that it skipped.
    pub skipped: bool,
}

impl Verdict {
    fn passed(&self) -> bool {
        self.result == "ok" && !self.skipped
    }
}

/// Reads libtest's output (`--test-threads=1 --show-output`): the `test NAME ... RESULT`
/// lines, and each passing test's captured output, under `---- NAME stdout ----`.
pub fn verdicts(out: &str, expected: &[String]) -> Vec<Verdict> {
    let mut results: Vec<(String, String)> = Vec::new();
    let mut captured: Vec<(String, String)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("---- ") {
            current = rest.strip_suffix(" stdout ----").map(|n| {
                captured.push((n.to_string(), String::new()));
                captured.len() - 1
            });
            continue;
        }
        if let Some((name, result)) = line
            .strip_prefix("test ")
            .and_then(|r| r.split_once(" ... "))
        {
            results.push((name.to_string(), result.trim().to_string()));
            current = None;
            continue;
        }
        // The blank line and the list that end the captured sections.
        if line == "successes:" || line == "failures:" || line.starts_with("test result:") {
            current = None;
        }
        if let Some(i) = current {
            captured[i].1.push_str(line);
            captured[i].1.push('\n');
        }
    }
    expected
        .iter()
        .map(|name| Verdict {
            name: name.clone(),
            result: results
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| "missing".into()),
            skipped: captured
                .iter()
                .any(|(n, text)| n == name && text.contains(SKIP_WORD)),
        })
        .collect()
}

fn guest_script(tests_name: &str, agent_host_path: &Path) -> String {
    let agent_dir = agent_host_path
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into());
    format!(
        r#"mkdir -p /run && mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup || echo "cannot mount cgroup2"
ip link set lo up
# The tests run the agent at the path cargo built it (CARGO_BIN_EXE_cairn-agent).
mkdir -p '{agent_dir}' && ln -s /bin/cairn-agent '{agent}'
echo "kernel=$(uname -r)"
cd /tmp
u0=$(cut -d' ' -f1 /proc/uptime)
RUST_BACKTRACE=1 /bin/{tests_name} --test-threads=1 --show-output > /tmp/tests.out 2>&1
echo "tests_rc=$?"
u1=$(cut -d' ' -f1 /proc/uptime)
echo "tests_seconds $u0 $u1"
echo "----- tests"
cat /tmp/tests.out
echo "----- left behind"
ip netns list
nft list tables
ls /sys/fs/bpf/cairn/isolation 2>/dev/null
ls -d /sys/fs/cgroup/cairn-t-* 2>/dev/null
echo "----- end"
"#,
        agent = agent_host_path.display(),
    )
}

/// The lines after `----- NAME` up to the next `----- ` line.
fn section_of(out: &str, name: &str) -> String {
    let head = format!("----- {name}");
    out.lines()
        .skip_while(|l| *l != head)
        .skip(1)
        .take_while(|l| !l.starts_with("----- "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The CI check: every containment test runs and passes on the 6.1 kernel.
pub fn vm_containment_check() -> Result<()> {
    section("vm containment: agent/tests/containment.rs on Debian's 6.1 cloud kernel");
    let missing = ensure_tools(GUEST_TOOLS)?;
    if !missing.is_empty() {
        bail!("the guest needs {} from this machine", missing.join(", "));
    }
    let built = build()?;
    let expected = listed(&built.tests)?;
    let mut binaries = vec![built.tests.clone(), built.agent.clone()];
    for (tool, _) in GUEST_TOOLS {
        binaries.push(host_command(tool)?);
    }
    let tests_name = built
        .tests
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{} has no file name", built.tests.display()))?;
    let r = run_guest(&GuestSpec {
        script: guest_script(&tests_name, &built.agent),
        binaries,
        modules: MODULES.iter().map(|m| m.to_string()).collect(),
        memory_mib: 1024,
        cpus: 2,
        timeout: Duration::from_secs(1200),
        ..GuestSpec::default()
    })?;
    let out = &r.script_output;
    let tests_out = &section_of(out, "tests");
    let guest_seconds = out
        .lines()
        .find_map(|l| l.strip_prefix("tests_seconds "))
        .and_then(|v| {
            let v: Vec<f64> = v
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            Some(v.get(1)? - v.first()?)
        });
    let kernel = out
        .lines()
        .find_map(|l| l.strip_prefix("kernel="))
        .unwrap_or("?");

    let verdicts = verdicts(tests_out, &expected);
    let mut problems = Vec::new();
    if !kernel.starts_with("6.1.") {
        problems.push(format!("the guest runs kernel {kernel:?}, not 6.1"));
    }
    println!("containment tests in the guest (kernel {kernel}):");
    for v in &verdicts {
        let named = if NAMED.contains(&v.name.as_str()) {
            " (issue #15)"
        } else {
            ""
        };
        let what = if v.skipped {
            "SKIPPED"
        } else {
            v.result.as_str()
        };
        println!("  {what:<8} {}{named}", v.name);
        if !v.passed() {
            problems.push(format!("{}: {what}", v.name));
        }
    }
    if out.lines().any(|l| l.trim() == "tests_rc=0") {
        if tests_out.contains(SKIP_WORD) {
            problems.push("the test output says a test skipped".into());
        }
    } else {
        problems.push("the test binary did not exit 0".into());
    }
    let left_behind = section_of(out, "left behind");
    let left: Vec<&str> = left_behind
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if !left.is_empty() {
        problems.push(format!(
            "the tests left namespaces, tables, pins or cgroups behind: {left:?}"
        ));
    }
    println!(
        "initramfs {:.1} s, boot to script {:.1} s, tests {} in the guest, QEMU total {:.1} s",
        r.initramfs_seconds,
        r.boot_seconds,
        guest_seconds.map_or("?".into(), |s| format!("{s:.1} s")),
        r.total_seconds
    );
    if !problems.is_empty() {
        println!("test output in the guest:\n{}", tail(tests_out, 80));
        println!("console tail:\n{}", tail(&r.console, 20));
        bail!("vm containment FAILED: {}", problems.join("; "));
    }
    println!(
        "vm containment PASS: {} of {} containment tests ran and passed on {kernel}",
        verdicts.len(),
        expected.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_and_skips_are_read_per_test() {
        let out = "\nrunning 3 tests\ntest a ... ok\ntest b ... ok\ntest c ... FAILED\n\n\
successes:\n\n---- b stdout ----\nskipped: containment tests need root\n\n\nsuccesses:\n    a\n    b\n\n\
failures:\n\n---- c stdout ----\nthread panicked\n\nfailures:\n    c\n\n\
test result: FAILED. 2 passed; 1 failed; 0 ignored\n";
        let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let v = verdicts(out, &names);
        assert!(v[0].passed());
        assert_eq!((v[1].result.as_str(), v[1].skipped), ("ok", true));
        assert!(!v[1].passed());
        assert_eq!(v[2].result, "FAILED");
        assert_eq!(v[3].result, "missing");
    }

    #[test]
    fn sections_end_at_the_next_marker() {
        let out = "x\n----- tests\nrunning 6 tests\n----- left behind\n----- end\n";
        assert_eq!(section_of(out, "tests"), "running 6 tests\n");
        assert_eq!(section_of(out, "left behind"), "");
        assert_eq!(section_of(out, "absent"), "");
    }
}
