//! Who may talk to the collector: only agents with a certificate from its own CA, only
//! enrollments with a valid token, only API callers with a token.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use cairn_harness::*;

#[test]
fn agent_with_certificate_from_another_ca_is_refused() {
    let work = workdir("auth-ca").unwrap();
    let a = Collector::start(work.path()).unwrap();
    let b = Collector::start(work.path()).unwrap();
    let agent = Agent::enroll(&b, work.path()).unwrap();

    // Positive control: B accepts the agent it enrolled.
    let ok = agent.ping().unwrap();
    assert!(
        ok.success(),
        "{}",
        ok.describe("should succeed against the collector that enrolled it")
    );

    // Point the agent at A: trust A's CA, use A's address, keep B's client certificate.
    std::fs::copy(&a.init.ca_cert, agent.state.join("ca.pem")).unwrap();
    let toml_path = agent.state.join("agent.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    let mut replaced = false;
    let rewritten: Vec<String> = toml
        .lines()
        .map(|line| {
            let key = line.split('=').next().unwrap_or("").trim();
            if key == "collector" && line.contains('=') && !replaced {
                replaced = true;
                format!("collector = \"{}\"", a.quic_addr())
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(
        replaced,
        "no `collector = \"...\"` line in {}:\n{toml}",
        toml_path.display()
    );
    std::fs::write(&toml_path, rewritten.join("\n") + "\n").unwrap();

    let refused = agent.ping().unwrap();
    assert!(
        !refused.success(),
        "{}",
        refused.describe("should fail: the agent's certificate comes from another CA")
    );
    let hosts = a.hosts().unwrap();
    assert!(
        hosts.is_empty() || !hosts.iter().any(|h| agent.is_host(h)),
        "collector A lists an agent it never enrolled: {hosts:?}"
    );
}

#[track_caller]
fn assert_refused(out: &Output, what: &str) {
    assert!(
        !out.success(),
        "{}",
        out.describe(&format!("should fail ({what})"))
    );
    assert!(
        out.stderr.to_lowercase().contains("refused"),
        "{}",
        out.describe(&format!("should say \"refused\" on stderr ({what})"))
    );
}

#[test]
fn enrollment_with_bad_tokens_is_refused() {
    let work = workdir("auth-enroll").unwrap();
    let c = Collector::start(work.path()).unwrap();

    let wrong = enroll_raw(
        &c,
        &work.path().join("state-wrong"),
        "cairn-not-a-valid-token",
    )
    .unwrap();
    assert_refused(&wrong, "wrong token");

    let expiring = c.token_create(5, "1s").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let expired = enroll_raw(&c, &work.path().join("state-expired"), &expiring).unwrap();
    assert_refused(&expired, "expired token");

    let once = c.token_create(1, "10m").unwrap();
    let first = enroll_raw(&c, &work.path().join("state-once-1"), &once).unwrap();
    assert!(
        first.success(),
        "{}",
        first.describe("should succeed (first use of a 1-use token)")
    );
    let second = enroll_raw(&c, &work.path().join("state-once-2"), &once).unwrap();
    assert_refused(&second, "exhausted token");
}

#[test]
fn api_without_a_valid_token_gets_401() {
    let work = workdir("auth-api").unwrap();
    let c = Collector::start(work.path()).unwrap();

    // Positive control: the admin token works.
    c.hosts().unwrap();

    let mut none = c.cairn_cmd(None).unwrap();
    none.args(["--json", "hosts"]);
    let none = run(none, CLI_TIMEOUT).unwrap();
    assert!(
        !none.success(),
        "{}",
        none.describe("should fail without a token")
    );

    let mut empty = c.cairn_cmd(Some("")).unwrap();
    empty.args(["--json", "hosts"]);
    let empty = run(empty, CLI_TIMEOUT).unwrap();
    assert!(
        !empty.success(),
        "{}",
        empty.describe("should fail with an empty token")
    );

    let mut bad = c.cairn_cmd(Some("cairn-wrong-token")).unwrap();
    bad.args(["--json", "hosts"]);
    let bad = run(bad, CLI_TIMEOUT).unwrap();
    assert!(
        !bad.success(),
        "{}",
        bad.describe("should fail with a wrong token")
    );
    assert!(
        bad.combined().contains("401"),
        "{}",
        bad.describe("should report HTTP 401 for a wrong token")
    );

    if !have_command("curl") {
        eprintln!("curl not installed: skipping the raw HTTPS checks");
        return;
    }
    let url = format!("{}/api/v1/hosts", c.api_url());
    let status = |auth: Option<String>| -> String {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&c.init.ca_cert);
        if let Some(h) = auth {
            cmd.arg("-H").arg(h);
        }
        cmd.arg(&url);
        run(cmd, CLI_TIMEOUT)
            .unwrap()
            .ok()
            .unwrap()
            .stdout
            .trim()
            .to_string()
    };
    assert_eq!(status(None), "401", "curl {url} without a token");
    assert_eq!(
        status(Some("Authorization: Bearer cairn-wrong-token".into())),
        "401",
        "curl {url} with a wrong token"
    );
    assert_eq!(
        status(Some(format!(
            "Authorization: Bearer {}",
            c.init.admin_token
        ))),
        "200",
        "curl {url} with the admin token"
    );
}
