//! The analyst CLI as a responder scripts it: distinct exit codes and one-line errors that say
//! what to do, pipes that close early, failed acquisitions that look failed, tables with
//! headers, evidence out by name and as a whole-collection archive, hosts and tokens.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cairn_harness::*;
use serde_json::Value;

/// `cairn ARGS` against `c` with `token` (none: no token at all), backtraces asked for.
fn cairn(c: &Collector, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = c.cairn_cmd(token).unwrap();
    cmd.env("RUST_BACKTRACE", "1").args(args);
    run(cmd, CLI_TIMEOUT).unwrap()
}

/// `cairn --api API ARGS` with the admin token.
fn cairn_at(c: &Collector, api: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(c.bins.cli().unwrap());
    cmd.env_remove("CAIRN_API")
        .env("RUST_BACKTRACE", "1")
        .env("CAIRN_TOKEN", &c.init.admin_token)
        .env("CAIRN_CA_CERT", &c.init.ca_cert)
        .arg("--api")
        .arg(api)
        .args(args);
    run(cmd, Duration::from_secs(90)).unwrap()
}

/// The exit code is `code` and stderr is one error line, without a backtrace or a panic.
fn fails_with(out: &Output, code: i32) -> String {
    assert_eq!(out.code, Some(code), "{}", out.describe("wrong exit code"));
    let err = out.stderr.trim();
    assert!(
        err.starts_with("error: ") && err.lines().count() == 1,
        "{}",
        out.describe("not a one-line error")
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    err.to_string()
}

/// `bash -c SCRIPT` with `$CAIRN` the CLI and its API, token and CA in the environment.
/// The script's own `cairn` exit status is what it prints as `status=N` on stderr.
fn shell(c: &Collector, script: &str) -> Output {
    let mut cmd = Command::new("bash");
    cmd.env("CAIRN", c.bins.cli().unwrap())
        .env("CAIRN_API", c.api_url())
        .env("CAIRN_TOKEN", &c.init.admin_token)
        .env("CAIRN_CA_CERT", &c.init.ca_cert)
        .env("RUST_BACKTRACE", "1")
        .args(["-c", script]);
    run(cmd, Duration::from_secs(300)).unwrap()
}

/// Readers that stop early: after a line, and before a byte.
const EARLY: &[&str] = &["head -1 >/dev/null", "(exec 0<&-; sleep 1)"];

/// `cairn` with its stdout read by a pipe whose reader went away: no panic, no complaint,
/// and the exit status of a process ended by SIGPIPE (or 0).
fn survives_closed_pipe(c: &Collector, args: &str, readers: &[&str]) {
    for reader in readers {
        let out = shell(
            c,
            &format!("\"$CAIRN\" {args} | {reader}; echo \"status=${{PIPESTATUS[0]}}\" >&2"),
        );
        let status = out
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("status="))
            .unwrap_or_else(|| panic!("{}", out.describe("printed no status")))
            .to_string();
        assert!(
            status == "0" || status == "141",
            "`cairn {args} | {reader}` exited {status}:\n{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("panicked") && !out.stderr.contains("Broken pipe"),
            "`cairn {args} | {reader}`:\n{}",
            out.stderr
        );
    }
}

/// `cairn-agent collect ARGS --out DIR` on this machine.
fn offline_collect(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new(bin("cairn-agent").unwrap());
    cmd.env_remove("CAIRN_AGENT_STATE")
        .arg("--state-dir")
        .arg(dir.with_extension("state"))
        .arg("collect")
        .args(args)
        .arg("--out")
        .arg(dir);
    run(cmd, Duration::from_secs(180)).unwrap().ok().unwrap();
}

#[test]
fn errors_are_one_line_with_distinct_exit_codes_and_say_what_to_do() {
    let work = workdir("cli-errors").unwrap();
    let c = Collector::start(work.path()).unwrap();

    let help = cairn(&c, None, &["--help"]);
    assert!(help.success(), "{}", help.describe("--help"));
    for line in [
        "Exit codes:",
        "3  partial",
        "4  not found",
        "5  auth",
        "8  verification",
    ] {
        assert!(
            help.stdout.contains(line),
            "--help lacks {line:?}:\n{}",
            help.stdout
        );
    }

    // No token: name the variable and how to make one (5).
    let err = fails_with(&cairn(&c, None, &["collections"]), 5);
    assert!(
        err.contains("CAIRN_TOKEN") && err.contains("cairn-collector token api"),
        "{err}"
    );
    let err = fails_with(&cairn(&c, Some("0123456789abcdef"), &["collections"]), 5);
    assert!(err.contains("401") && err.contains("CAIRN_TOKEN"), "{err}");

    // Plain HTTP to the HTTPS API: say it is HTTPS (6).
    let http = c.api_url().replace("https://", "http://");
    let err = fails_with(&cairn_at(&c, &http, &["collections"]), 6);
    assert!(err.contains("HTTPS") && err.contains(&c.api_url()), "{err}");
    // Nothing listening: what to check (6).
    let (_, port) = free_ports().unwrap();
    let err = fails_with(
        &cairn_at(&c, &format!("https://127.0.0.1:{port}"), &["hosts"]),
        6,
    );
    assert!(
        err.contains("cairn-collector serve") && err.contains("firewall"),
        "{err}"
    );

    // A missing --reason is a usage error about --reason alone (2).
    let out = cairn(&c, Some(&c.init.admin_token), &["collect", "web-1"]);
    assert_eq!(out.code, Some(2), "{}", out.describe("usage"));
    assert!(out.stderr.contains("--reason"), "{}", out.stderr);
    for not_required in ["--api", "--token", "--ca-cert"] {
        assert!(
            !out.stderr.contains(not_required),
            "usage names {not_required} as if required:\n{}",
            out.stderr
        );
    }

    // A flag the profile would ignore is refused before anything is sent (2)…
    let admin = Some(c.init.admin_token.as_str());
    let err = fails_with(
        &cairn(
            &c,
            admin,
            &[
                "collect",
                "web-1",
                "--profile",
                "volatile",
                "--pid",
                "1",
                "--path",
                "/etc/passwd",
                "--reason",
                "x",
            ],
        ),
        2,
    );
    assert!(
        err.contains("--pid") && err.contains("memory, full"),
        "{err}"
    );
    // …and what the collector refuses names the CLI flag, not the API field.
    let err = fails_with(
        &cairn(
            &c,
            admin,
            &["collect", "web-1", "--profile", "file", "--reason", "x"],
        ),
        2,
    );
    assert!(err.contains("--path") && err.contains("400"), "{err}");
    let listed = c.cli_json(&["collections"]).unwrap();
    assert_eq!(listed["collections"], Value::Array(vec![]), "{listed}");

    // Unknown things are 4; an unknown host is said so, not an empty list.
    fails_with(&cairn(&c, admin, &["show", "abcdef00"]), 4);
    let err = fails_with(
        &cairn(&c, admin, &["collections", "--host", "no-such-host"]),
        4,
    );
    assert!(err.contains("no-such-host"), "{err}");

    // Tokens: listed (never a secret), revoked; a viewer may not list them (5).
    let mut mk = c.collector_cmd().unwrap();
    mk.args(["token", "api", "--data"]).arg(&c.data).args([
        "--name",
        "soc-viewer",
        "--role",
        "viewer",
    ]);
    let viewer = run(mk, CLI_TIMEOUT).unwrap().ok().unwrap();
    let viewer = viewer
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("cairn_api_"))
        .unwrap_or_else(|| panic!("no token in {:?}", viewer.stdout))
        .to_string();
    let err = fails_with(&cairn(&c, Some(&viewer), &["tokens", "list"]), 5);
    assert!(err.contains("403"), "{err}");
    let table = cairn(&c, admin, &["tokens"]);
    assert!(table.success(), "{}", table.describe("tokens"));
    assert!(table.stdout.starts_with("ID "), "{}", table.stdout);
    assert!(table.stdout.contains("soc-viewer"), "{}", table.stdout);
    assert!(!table.stdout.contains(&viewer) && !table.stdout.contains(&c.init.admin_token));
    let revoked = cairn(&c, admin, &["tokens", "revoke", "soc-viewer"]);
    assert!(revoked.success(), "{}", revoked.describe("revoke"));
    fails_with(&cairn(&c, Some(&viewer), &["hosts"]), 5);
    let tokens = c.cli_json(&["tokens", "list"]).unwrap();
    let row = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "soc-viewer")
        .cloned()
        .unwrap();
    assert!(row["revoked_at"].is_string(), "{row}");
    fails_with(
        &cairn(&c, admin, &["tokens", "revoke", "soc-viewer-nope"]),
        4,
    );
}

#[test]
fn a_failed_memory_capture_is_failed_and_the_collection_partial() {
    let work = workdir("cli-failed").unwrap();
    let c = Collector::start(work.path()).unwrap();
    // A host root with no /proc/kcore, /dev/crash or /dev/mem: physical memory cannot be read.
    let root = work.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::write(root.join("proc/iomem"), "00100000-3fffffff : System RAM\n").unwrap();
    let mut agent = Agent::enroll(&c, work.path()).unwrap();
    agent.run_with_host_root(&root).unwrap();
    let host = agent.wait_connected(&c, Duration::from_secs(60)).unwrap();
    let hostname = c
        .hosts()
        .unwrap()
        .into_iter()
        .find(|h| h["id"] == host.as_str())
        .and_then(|h| h["hostname"].as_str().map(str::to_string))
        .unwrap();

    let out = c
        .cli_text(
            &[
                "collect",
                &hostname,
                "--profile",
                "full",
                "--reason",
                "IR-42",
                "--wait",
                "--progress",
                "--timeout",
                "240",
            ],
            Duration::from_secs(300),
        )
        .unwrap();
    assert_eq!(out.code, Some(3), "{}", out.describe("should exit partial"));
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("physical-memory."))
        .unwrap_or_else(|| panic!("{}", out.describe("no physical memory item")));
    assert!(line.contains("FAILED") && !line.contains("0 B"), "{line}");
    assert!(out.stdout.contains("[partial]"), "{}", out.stdout);
    assert!(
        out.stdout.contains("no physical memory source"),
        "{}",
        out.stdout
    );
    // Progress went to stderr, with bytes.
    assert!(
        out.stderr.contains("items,") && out.stderr.contains("received"),
        "{}",
        out.stderr
    );

    let listed = c.cli_json(&["collections", "--host", &hostname]).unwrap();
    let coll = &listed["collections"][0];
    assert_eq!(coll["status"], "partial", "{listed}");
    let cid = coll["id"].as_str().unwrap().to_string();
    let shown = c.show(&cid[..8]).unwrap();
    let item = item_named(&shown, "physical-memory.lime")
        .or_else(|| {
            items(&shown).into_iter().find(|i| {
                i["name"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("physical-memory.")
            })
        })
        .unwrap();
    assert_eq!(item["acquisition_status"], "failed", "{item}");

    // The table: a header, the host by name, the status, what went wrong.
    let table = c
        .cli_text(&["collections"], CLI_TIMEOUT)
        .unwrap()
        .ok()
        .unwrap();
    let mut lines = table.stdout.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("HOST") && header.contains("STATUS"),
        "{header}"
    );
    let row = lines.next().unwrap();
    assert!(
        row.contains(&hostname) && row.contains("partial") && row.contains("acquisition failed"),
        "{row}"
    );
    // Times to the second in tables.
    assert!(
        row.split_whitespace()
            .any(|w| w.contains('T') && w.ends_with('Z') && !w.contains('.')),
        "{row}"
    );

    // The item: FAILED with its reason, its source as text rather than JSON.
    let item_id = item["id"].as_str().unwrap();
    let shown = c
        .cli_text(&["item", &item_id[..10]], CLI_TIMEOUT)
        .unwrap()
        .ok()
        .unwrap();
    assert!(shown.stdout.contains("[FAILED]"), "{}", shown.stdout);
    assert!(
        shown.stdout.contains("name: physical-memory."),
        "{}",
        shown.stdout
    );
    assert!(
        !shown.stdout.contains("{\""),
        "raw JSON in `cairn item`:\n{}",
        shown.stdout
    );

    // Hosts: readiness detail, retire by name; a retired host is not collected from.
    let hosts = c.cli_text(&["hosts"], CLI_TIMEOUT).unwrap().ok().unwrap();
    assert!(hosts.stdout.contains(&hostname), "{}", hosts.stdout);
    let detail = c
        .cli_text(&["hosts", "readiness", &hostname], CLI_TIMEOUT)
        .unwrap();
    assert!(detail.success(), "{}", detail.describe("readiness"));
    assert!(detail.stdout.contains("readiness:"), "{}", detail.stdout);
    c.cli_json(&["hosts", "readiness", &hostname]).unwrap();
    survives_closed_pipe(&c, "collections", EARLY);
    survives_closed_pipe(&c, &format!("show {cid}"), EARLY);
    let retired = c
        .cli_text(
            &[
                "hosts",
                "retire",
                &hostname,
                "--reason",
                "instance terminated",
            ],
            CLI_TIMEOUT,
        )
        .unwrap();
    assert!(retired.success(), "{}", retired.describe("retire"));
    let again = c
        .cli_text(&["collect", &hostname, "--reason", "x"], CLI_TIMEOUT)
        .unwrap();
    assert!(
        matches!(again.code, Some(4) | Some(7)),
        "{}",
        again.describe("collect from a retired host")
    );
}

#[test]
fn evidence_comes_out_by_name_and_as_a_checked_archive() {
    let work = workdir("cli-evidence").unwrap();
    let files = work.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let auth = files.join("auth.log");
    std::fs::write(
        &auth,
        "May  1 12:00:00 web-1 sshd[1]: Accepted publickey for root\n",
    )
    .unwrap();
    let long = files
        .join("dir")
        .join("a-rather-long-file-name-that-does-not-fit-in-the-name-column.bin");
    std::fs::create_dir_all(long.parent().unwrap()).unwrap();
    let payload_sha = write_random_file(&long, 3 << 20, 7).unwrap();
    let dir = work.path().join("offline");
    let (auth_s, long_s) = (
        auth.to_string_lossy().into_owned(),
        long.to_string_lossy().into_owned(),
    );
    offline_collect(
        &dir,
        &[
            "--profile",
            "file",
            "--path",
            &auth_s,
            "--path",
            &long_s,
            "--reason",
            "IR-7",
        ],
    );
    let c = Collector::start(work.path()).unwrap();

    // The import's reader goes away at once: no panic, and the import is whole.
    let d = dir.to_string_lossy().into_owned();
    survives_closed_pipe(&c, &format!("import {d}"), &["head -1 >/dev/null"]);
    let listed = c.cli_json(&["collections"]).unwrap();
    let cid = listed["collections"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(listed["collections"][0]["status"], "sealed", "{listed}");
    // Files say their size when they are planned: what progress and the ETA are measured by.
    let shown = c.api_get(&format!("/api/v1/collections/{cid}")).unwrap();
    let long_item = shown["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("a-rather-long")
        })
        .unwrap();
    assert_eq!(long_item["expected_len"], 3u64 << 20, "{long_item}");
    let p = &shown["progress"];
    assert_eq!(p["items_sealed"], p["items_begun"], "{p}");
    assert_eq!(p["bytes_expected"], p["bytes_received"], "{p}");
    assert_eq!(p["eta_secs"], 0.0, "{p}");

    // By name, COLLECTION:NAME or --name, to a file or stdout, never over a file.
    let out = work.path().join("auth.out");
    let o = out.to_string_lossy().into_owned();
    let first = c
        .cli_text(
            &["export", &format!("{}:auth.log", &cid[..8]), "-o", &o],
            CLI_TIMEOUT,
        )
        .unwrap();
    assert!(first.success(), "{}", first.describe("export by name"));
    assert_eq!(sha256sum_cli(&out).unwrap(), sha256_file(&auth).unwrap());
    std::fs::write(&out, "mine").unwrap();
    let refused = cairn(
        &c,
        Some(&c.init.admin_token),
        &["export", &cid, "--name", "auth.log", "-o", &o],
    );
    let err = fails_with(&refused, 7);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
    let forced = c
        .cli_text(
            &["export", &cid, "--name", "auth.log", "-o", &o, "--force"],
            CLI_TIMEOUT,
        )
        .unwrap();
    assert!(forced.success(), "{}", forced.describe("export --force"));
    assert_eq!(sha256sum_cli(&out).unwrap(), sha256_file(&auth).unwrap());
    let piped = shell(
        &c,
        &format!("\"$CAIRN\" export {cid} --name a-rather-long-file-name-that-does-not-fit-in-the-name-column.bin -o - | sha256sum"),
    );
    assert!(
        piped.stdout.starts_with(&payload_sha),
        "{}",
        piped.describe("export -o -")
    );
    fails_with(
        &cairn(
            &c,
            Some(&c.init.admin_token),
            &["export", &format!("{cid}:nope.log"), "-o", &o, "--force"],
        ),
        4,
    );

    // `show` keeps its columns with a long name.
    let shown = c
        .cli_text(&["show", &cid[..8]], CLI_TIMEOUT)
        .unwrap()
        .ok()
        .unwrap();
    let rows: Vec<&str> = shown
        .stdout
        .lines()
        .filter(|l| l.contains(" sealed "))
        .collect();
    assert_eq!(rows.len(), 2, "{}", shown.stdout);
    let col = |l: &str| l[..l.find(" sealed ").unwrap()].chars().count();
    assert_eq!(col(rows[0]), col(rows[1]), "misaligned:\n{}", shown.stdout);
    assert!(shown.stdout.contains('…'), "{}", shown.stdout);

    // The archive: checked by the real sha256sum, never over a file, streamed to stdout.
    let tar = work.path().join("c.tar");
    let t = tar.to_string_lossy().into_owned();
    let made = c
        .cli_text(&["archive", &cid[..8], "-o", &t], Duration::from_secs(120))
        .unwrap();
    assert!(made.success(), "{}", made.describe("archive"));
    let x = work.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    let mut untar = Command::new("tar");
    untar.arg("xf").arg(&tar).arg("-C").arg(&x);
    run(untar, CLI_TIMEOUT).unwrap().ok().unwrap();
    let root = x.join(format!("cairn-{cid}"));
    let mut check = Command::new("sha256sum");
    check.arg("-c").arg("SHA256SUMS").current_dir(&root);
    let checked = run(check, CLI_TIMEOUT).unwrap();
    assert!(checked.success(), "{}", checked.describe("sha256sum -c"));
    assert_eq!(
        checked
            .stdout
            .lines()
            .filter(|l| l.ends_with(": OK"))
            .count(),
        2,
        "{}",
        checked.stdout
    );
    assert!(root.join("custody.json").is_file() && root.join("manifests").is_dir());
    let before = std::fs::metadata(&tar).unwrap().len();
    fails_with(
        &cairn(&c, Some(&c.init.admin_token), &["archive", &cid, "-o", &t]),
        7,
    );
    assert_eq!(std::fs::metadata(&tar).unwrap().len(), before);
    let listed = shell(&c, &format!("\"$CAIRN\" archive {cid} -o - | tar tf -"));
    assert!(
        listed.stdout.contains("SHA256SUMS"),
        "{}",
        listed.describe("archive -o -")
    );

    // The timeline's sources are listed.
    let sources = c
        .cli_text(&["timeline", "sources"], CLI_TIMEOUT)
        .unwrap()
        .ok()
        .unwrap();
    assert!(sources.stdout.starts_with("ITEM "), "{}", sources.stdout);
}

#[test]
fn an_interrupted_import_is_finished_by_running_it_again() {
    let work = workdir("cli-resume").unwrap();
    let files = work.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let mut args: Vec<String> = ["--profile", "file", "--reason", "IR-9"]
        .map(String::from)
        .to_vec();
    for n in 0..6 {
        let p = files.join(format!("blob{n}.bin"));
        write_random_file(&p, 24 << 20, n).unwrap();
        args.push("--path".into());
        args.push(p.to_string_lossy().into_owned());
    }
    let dir = work.path().join("offline");
    offline_collect(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let c = Collector::start(work.path()).unwrap();

    // Killed after its first item, as by Ctrl-C or a dropped connection.
    let mut cmd = c.cairn_cmd(Some(&c.init.admin_token)).unwrap();
    cmd.arg("import")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(stderr);
    while reader.read_line(&mut line).unwrap() > 0 && !line.contains("imported ") {
        line.clear();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let listed = c.cli_json(&["collections"]).unwrap();
    assert_eq!(listed["collections"][0]["status"], "running", "{listed}");

    let again = c
        .cli_text(
            &["import", &dir.to_string_lossy()],
            Duration::from_secs(300),
        )
        .unwrap();
    assert_eq!(again.code, Some(0), "{}", again.describe("re-run import"));
    assert!(again.stderr.contains("resuming"), "{}", again.stderr);
    assert!(again.stdout.contains("[sealed]"), "{}", again.stdout);
    // A finished import is not imported twice (7).
    let third = cairn(
        &c,
        Some(&c.init.admin_token),
        &["import", &dir.to_string_lossy()],
    );
    let err = fails_with(&third, 7);
    assert!(err.contains("already imported"), "{err}");
}

/// Live events are not API-only: `cairn hosts events HOST` lists what the sensor sent.
#[test]
fn a_hosts_live_events_are_listed_by_the_cli() {
    let work = workdir("cli-events").unwrap();
    let (collector, _agent, host) = collector_with_agent(work.path()).unwrap();
    let marker = "cairn-cli-events-marker";
    let found = wait_for(
        "the sensor's exec of the marker",
        Duration::from_secs(60),
        || {
            Command::new("/bin/echo").arg(marker).output().unwrap();
            let out = cairn(
                &collector,
                Some(&collector.init.admin_token),
                &[
                    "hosts",
                    "events",
                    &host,
                    "--kind",
                    "process_exec",
                    "--from",
                    "-10m",
                    "--json",
                ],
            );
            assert_eq!(out.code, Some(0), "{}", out.stderr);
            let v: Value = serde_json::from_str(&out.stdout).unwrap();
            Ok(v["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e.to_string().contains(marker))
                .then_some(()))
        },
    );
    found.unwrap();
    let out = cairn(
        &collector,
        Some(&collector.init.admin_token),
        &["hosts", "events", &host, "--from", "-10m"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("TIME"), "{}", out.stdout);
    assert!(out.stdout.contains(marker), "{}", out.stdout);
    let out = cairn(
        &collector,
        Some(&collector.init.admin_token),
        &["hosts", "events", "no-such-host"],
    );
    assert_eq!(out.code, Some(4), "an unknown host: {}", out.stderr);
}
