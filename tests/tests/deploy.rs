//! deploy/: the cloud-config passes cloud-init's schema, the manifest passes
//! kubernetes-validate, the unit passes systemd-analyze, and the user-data script — run
//! against a temporary root, with the agent served over loopback HTTP — installs, enrolls and
//! starts an agent that shows up in `cairn hosts` with a readiness result.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_harness::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

/// A tool from PATH, else from the virtualenv `cargo xtask setup` fills (target/pytools/bin).
fn tool(name: &str) -> PathBuf {
    if have_command(name) {
        return PathBuf::from(name);
    }
    let venv = repo().join("target/pytools/bin").join(name);
    assert!(
        venv.exists(),
        "{name} is not installed: run `cargo xtask setup`"
    );
    venv
}

#[test]
fn cloud_config_passes_cloud_init_schema() {
    let file = deploy("cloud-init/cloud-config.yaml");
    let mut cmd = Command::new("cloud-init");
    cmd.args(["schema", "--config-file"]).arg(&file);
    let out = run(cmd, CLI_TIMEOUT).unwrap();
    assert!(
        out.success(),
        "{}",
        out.describe("rejected the cloud-config")
    );
    assert!(out.stdout.contains("Valid cloud-config"), "{}", out.stdout);

    // Negative control: the same schema check rejects a malformed runcmd entry.
    let work = workdir("deploy-schema").unwrap();
    let bad = work.path().join("bad.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &bad,
        text.replace(
            "  - [systemctl, daemon-reload]",
            "  - {systemctl: daemon-reload}",
        ),
    )
    .unwrap();
    let mut cmd = Command::new("cloud-init");
    cmd.args(["schema", "--config-file"]).arg(&bad);
    let out = run(cmd, CLI_TIMEOUT).unwrap();
    assert!(
        !out.success(),
        "{}",
        out.describe("accepted a malformed runcmd")
    );

    // The unit it writes is the one in deploy/systemd, byte for byte (indented for YAML).
    let unit = std::fs::read_to_string(deploy("systemd/cairn-agent.service")).unwrap();
    let indented: String = unit
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("      {l}\n")
            }
        })
        .collect();
    assert!(
        text.contains(&indented),
        "cloud-config.yaml's unit differs from deploy/systemd/cairn-agent.service"
    );
}

#[test]
fn kubernetes_manifest_passes_kubernetes_validate() {
    let file = deploy("kubernetes/cairn-agent.yaml");
    let mut cmd = Command::new(tool("kubernetes-validate"));
    cmd.arg("--strict").arg(&file);
    let out = run(cmd, CLI_TIMEOUT).unwrap();
    assert!(out.success(), "{}", out.describe("rejected the manifest"));
    let text = out.combined();
    for kind in [
        "namespace/cairn",
        "serviceaccount/cairn-agent",
        "secret/cairn-enrollment",
        "daemonset/cairn-agent",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind}: {text}"
        );
    }
    let manifest = std::fs::read_to_string(&file).unwrap();
    for needed in [
        "hostPID: true",
        "--host-root /host",
        "/sys/kernel/btf",
        "/sys/kernel/tracing",
        "/sys/fs/bpf",
        "operator: Exists",
        "drop: [\"ALL\"]",
    ] {
        assert!(manifest.contains(needed), "the manifest lacks {needed}");
    }
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let work = workdir("deploy-unit").unwrap();
    let unit = std::fs::read_to_string(deploy("systemd/cairn-agent.service")).unwrap();
    // verify wants ExecStart's binary to exist: point it at the one just built.
    let agent = bin("cairn-agent").unwrap();
    let ours = work.path().join("cairn-agent.service");
    std::fs::write(
        &ours,
        unit.replace("/usr/local/bin/cairn-agent", &agent.display().to_string()),
    )
    .unwrap();
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").arg(&ours);
    let out = run(cmd, CLI_TIMEOUT).unwrap();
    assert!(out.success(), "{}", out.describe("rejected the unit"));
    assert!(
        out.stderr.trim().is_empty(),
        "systemd-analyze verify warned about the unit:\n{}",
        out.stderr
    );
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON",
    ] {
        assert!(unit.contains(hardening), "the unit lacks {hardening}");
    }

    // Negative control: a misspelt setting is reported.
    let bad = work.path().join("bad.service");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&ours)
            .unwrap()
            .replace("Restart=always", "Restart=sometimes"),
    )
    .unwrap();
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").arg(&bad);
    let out = run(cmd, CLI_TIMEOUT).unwrap();
    assert!(
        out.stderr.contains("sometimes"),
        "{}",
        out.describe("did not notice a bad setting")
    );
}

/// Serves `body` at `/cairn-agent` over loopback HTTP until the test ends; returns the URL.
fn serve_over_http(body: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/cairn-agent", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let found = req.starts_with(b"GET /cairn-agent ");
            let (status, payload): (&str, &[u8]) = if found {
                ("200 OK", &body)
            } else {
                ("404 Not Found", b"")
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                payload.len()
            );
            let _ = conn.write_all(payload);
        }
    });
    url
}

/// Runs deploy/cloud-init/user-data.sh with its variables set for a temporary root.
fn user_data(root: &Path, url: &str, sha: &str, c: &Collector, env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(deploy("cloud-init/user-data.sh"))
        .env_remove("CAIRN_AGENT_STATE")
        .env("CAIRN_ROOT", root)
        .env("CAIRN_NO_SYSTEMD", "1")
        .env("CAIRN_AGENT_URL", url)
        .env("CAIRN_AGENT_SHA256", sha)
        .env("CAIRN_COLLECTOR", c.quic_addr())
        .env("CAIRN_CA_SHA256", &c.init.ca_sha256)
        .env("CAIRN_ENROLL_TOKEN", &c.init.enrollment_token);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd, Duration::from_secs(120)).unwrap()
}

/// Kills the agent the script started (by the pid it wrote) when the test ends.
struct StartedAgent(PathBuf);

impl Drop for StartedAgent {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) on the pid of the agent this test started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn user_data_installs_enrolls_starts_and_reports_readiness() {
    let work = workdir("deploy-userdata").unwrap();
    let collector = Collector::start(work.path()).unwrap();
    let agent_bytes = std::fs::read(bin("cairn-agent").unwrap()).unwrap();
    let sha = sha256_bytes(&agent_bytes);
    let url = serve_over_http(agent_bytes);

    // A wrong SHA-256 installs nothing.
    let refused = work.path().join("refused");
    let out = user_data(&refused, &url, &"0".repeat(64), &collector, &[]);
    assert!(
        !out.success(),
        "{}",
        out.describe("installed an agent with the wrong SHA-256")
    );
    assert!(out.stderr.contains("not installing it"), "{}", out.stderr);
    assert!(!refused.join("usr/local/bin/cairn-agent").exists());

    let root = work.path().join("root");
    let _agent = StartedAgent(root.join("run/cairn-agent.pid"));
    let out = user_data(&root, &url, &sha, &collector, &[]);
    assert!(out.success(), "{}", out.describe("failed"));
    let installed = root.join("usr/local/bin/cairn-agent");
    assert_eq!(sha256_file(&installed).unwrap(), sha);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/systemd/system/cairn-agent.service")).unwrap(),
        std::fs::read_to_string(deploy("systemd/cairn-agent.service")).unwrap(),
        "the script installs the unit of deploy/systemd"
    );
    assert!(root.join("var/lib/cairn-agent/agent.toml").exists());
    // The script ran the self-test: its table is in the output.
    assert!(
        out.stdout.contains("collector.evidence_round_trip"),
        "{}",
        out.stdout
    );

    // The agent it started is connected and has a readiness result in `cairn hosts`.
    let log = root.join("var/log/cairn-agent.log");
    let host = wait_for(
        "the agent to connect with a readiness result",
        Duration::from_secs(60),
        || {
            let hosts = collector.hosts()?;
            Ok(hosts.into_iter().find(|h| {
                h["connected"] == true
                    && h["readiness"]
                        .as_str()
                        .is_some_and(|r| ["pass", "warn", "fail"].contains(&r))
            }))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", tail_file(&log, 30)));
    assert!(host["readiness_since"].is_string(), "{host}");
    let mut cmd = collector
        .cairn_cmd(Some(&collector.init.admin_token))
        .unwrap();
    cmd.arg("hosts");
    let table = run(cmd, CLI_TIMEOUT).unwrap().ok().unwrap();
    assert!(table.stdout.contains("READINESS"), "{}", table.stdout);
    assert!(
        table.stdout.contains(host["readiness"].as_str().unwrap()),
        "{}",
        table.stdout
    );
    // The running agent tested itself at start, too.
    wait_for(
        "the agent's start-up self-test",
        Duration::from_secs(30),
        || {
            Ok(std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("readiness self-test:")
                .then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", tail_file(&log, 30)));

    // The token from SSM Parameter Store: an `aws` on PATH that answers like the real CLI
    // for this parameter, and records how it was asked.
    let fake = work.path().join("fake-aws");
    std::fs::create_dir_all(&fake).unwrap();
    let asked = work.path().join("aws-args");
    let aws = fake.join("aws");
    std::fs::write(
        &aws,
        format!(
            "#!/bin/sh\necho \"$*\" > {}\n[ \"$*\" = \"ssm get-parameter --with-decryption --name /cairn/token --query Parameter.Value --output text\" ] || exit 255\necho {}\n",
            asked.display(),
            collector.init.enrollment_token
        ),
    )
    .unwrap();
    std::fs::set_permissions(&aws, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ssm_root = work.path().join("ssm-root");
    let _ssm_agent = StartedAgent(ssm_root.join("run/cairn-agent.pid"));
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = user_data(
        &ssm_root,
        &url,
        &sha,
        &collector,
        &[
            ("CAIRN_ENROLL_TOKEN", String::new()),
            ("CAIRN_TOKEN_SSM_PARAMETER", "/cairn/token".into()),
            ("PATH", path),
            // Another host, on this same machine (one machine id) as the first.
            ("CAIRN_NEW_IDENTITY", "1".into()),
        ],
    );
    assert!(
        out.success(),
        "{}",
        out.describe("failed with the token from SSM")
    );
    assert!(std::fs::read_to_string(&asked)
        .unwrap()
        .contains("--name /cairn/token"));
    wait_for(
        "both agents to report readiness",
        Duration::from_secs(60),
        || {
            let hosts = collector.hosts()?;
            let ready = hosts
                .iter()
                .filter(|h| h["connected"] == true && h["readiness"].is_string())
                .count();
            Ok((ready == 2).then_some(()))
        },
    )
    .unwrap();
}

#[test]
fn host_root_resolves_collected_paths_inside_the_host() {
    // A container's view: the host's root file system mounted at ROOT.
    let work = workdir("deploy-hostroot").unwrap();
    let root = work.path().join("host");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let marker = "host-root-marker\n";
    std::fs::write(root.join("etc/hostname"), marker).unwrap();
    // An absolute symlink on the host points at the host's file, not the container's.
    std::os::unix::fs::symlink("/etc/hostname", root.join("etc/link")).unwrap();
    let out_dir = work.path().join("out");
    let mut cmd = Command::new(bin("cairn-agent").unwrap());
    cmd.env_remove("CAIRN_AGENT_STATE")
        .arg("--host-root")
        .arg(&root)
        .args(["--state-dir"])
        .arg(work.path().join("state"))
        .args([
            "collect",
            "--profile",
            "file",
            "--path",
            "/etc/link",
            "--path",
            "/../../etc/hostname",
            "--out",
        ])
        .arg(&out_dir);
    let out = run(cmd, CLI_TIMEOUT).unwrap().ok().unwrap();
    let want = sha256_bytes(marker.as_bytes());
    let lines: Vec<&str> = out.stdout.lines().filter(|l| l.contains(&want)).collect();
    assert_eq!(
        lines.len(),
        2,
        "both paths should be the host root's file:\n{}",
        out.stdout
    );
}
