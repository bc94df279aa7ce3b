//! The collector under attack, through the real binaries: what an outsider can make it hold,
//! what a leaked trigger token can make it do, what others on the machine can read, and what a
//! tampered offline collection gets. Each of these failed before #12.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_harness::serde_json::{self, json, Value};
use cairn_harness::*;

/// `curl` with the collector's CA: (HTTP status, body as JSON or Null).
fn curl(
    collector: &Collector,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    extra: &[&str],
) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        "--cacert",
    ])
    .arg(&collector.init.ca_cert)
    .args(["-H", &format!("Authorization: Bearer {token}")])
    .args(["-H", "Content-Type: application/json"])
    .args(extra);
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    cmd.arg(format!("{}{path}", collector.api_url()));
    let out = run(cmd, Duration::from_secs(120)).unwrap();
    let (json_part, code) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(json_part).unwrap_or(Value::Null),
    )
}

fn trigger_token(collector: &Collector) -> String {
    let mut cmd = Command::new(bin("cairn-collector").unwrap());
    cmd.args(["token", "api", "--data"])
        .arg(&collector.data)
        .args(["--name", "leaked-soar", "--role", "trigger"]);
    let out = run(cmd, Duration::from_secs(30)).unwrap().ok().unwrap();
    out.stdout.trim().to_string()
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn half_open_connections_and_garbage_datagrams_do_not_shut_out_a_client() {
    let work = workdir("hostile-conn").unwrap();
    let collector = Collector::start(work.path()).unwrap();
    let pid = collector.pid().unwrap();
    let before_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    // 1,000 connections that never start their TLS handshake.
    let api = format!("127.0.0.1:{}", collector.api_port);
    let held: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(&api).ok())
        .collect();
    assert!(held.len() >= 990, "only {} connections opened", held.len());
    std::thread::sleep(Duration::from_millis(300));
    // A real client still gets its answer, within a second.
    let start = Instant::now();
    let (code, v) = curl(
        &collector,
        &collector.init.admin_token,
        "GET",
        "/api/v1/hosts",
        None,
        &["--max-time", "5"],
    );
    let took = start.elapsed();
    assert_eq!(code, 200, "{v}");
    assert!(
        took < Duration::from_secs(1),
        "the API answered in {took:?} with 1,000 half-open connections"
    );
    // The collector does not keep what it cannot use: handshakes time out, evicted ones close.
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    assert!(
        fds < before_fds + 200,
        "{fds} descriptors open (before: {before_fds}) with 1,000 half-open connections"
    );
    drop(held);

    // Garbage on the QUIC port: at most a few log lines, not one each.
    let log_before = std::fs::read_to_string(&collector.log)
        .unwrap()
        .lines()
        .count();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..5000u32 {
        let mut d = vec![0u8; 1200];
        for b in d.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        // Long-header Initial packets of QUIC v1, so the endpoint tries a handshake.
        d[0] = 0xc0 | (i as u8 & 0x0f);
        d[1..5].copy_from_slice(&1u32.to_be_bytes());
        d[5] = 8;
        let _ = sock.send_to(&d, collector.quic_addr());
    }
    std::thread::sleep(Duration::from_secs(2));
    let log = std::fs::read_to_string(&collector.log).unwrap();
    let new_lines = log.lines().count() - log_before;
    assert!(
        new_lines < 20,
        "5,000 bad datagrams made {new_lines} log lines:\n{}",
        tail_str(&log, 30)
    );
    let (code, _) = curl(
        &collector,
        &collector.init.admin_token,
        "GET",
        "/api/v1/hosts",
        None,
        &[],
    );
    assert_eq!(code, 200);
    let _ = vm_hwm_kib(pid);
}

#[test]
fn a_trigger_token_is_bounded_by_the_trigger_policy() {
    let work = workdir("hostile-trigger").unwrap();
    let (collector, _agent, host) = collector_with_agent(work.path()).unwrap();
    let token = trigger_token(&collector);
    let hostname = collector.hosts().unwrap()[0]["hostname"]
        .as_str()
        .unwrap()
        .to_string();
    let ask = |profile: &str, extra: Value| {
        let mut b = json!({"host": host, "profile": profile, "reason": "leaked token"});
        if let (Some(o), Value::Object(x)) = (b.as_object_mut(), extra) {
            o.extend(x);
        }
        curl(
            &collector,
            &token,
            "POST",
            "/api/v1/collections",
            Some(&b.to_string()),
            &[],
        )
    };
    // Profiles outside the policy, files and devices are refused, saying what to configure.
    for (profile, extra) in [
        ("disk", json!({"devices": ["/dev/vda"]})),
        ("full", json!({})),
        ("file", json!({"paths": ["/etc/shadow"]})),
    ] {
        let (code, v) = ask(profile, extra);
        assert_eq!(code, 403, "{profile}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("triggers.toml"),
            "{v}"
        );
    }
    // A generic trigger naming a host under another domain does not find this host.
    let (code, v) = curl(
        &collector,
        &token,
        "POST",
        "/api/v1/triggers/generic",
        Some(
            &json!({"hostname": format!("{hostname}.attacker.example"), "reason": "x"}).to_string(),
        ),
        &[],
    );
    assert_eq!(code, 404, "{v}");
    // The per-host budget holds on POST /collections too: 6 an hour by default.
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(ask("volatile", json!({})).0);
    }
    assert_eq!(codes.iter().filter(|c| **c == 202).count(), 6, "{codes:?}");
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
    // Whoever asks: relative paths, non-device paths and enormous path lists are refused.
    let admin = collector.init.admin_token.clone();
    for (extra, needle) in [
        (
            json!({"profile": "file", "paths": ["../../../../etc/shadow"]}),
            "not absolute",
        ),
        (
            json!({"profile": "disk", "devices": ["/etc/passwd"]}),
            "not a device path",
        ),
        (
            json!({"profile": "file", "paths": (0..5000).map(|i| format!("/tmp/f{i}")).collect::<Vec<_>>()}),
            "at most",
        ),
    ] {
        let mut b = json!({"host": host, "reason": "checks"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (code, v) = curl(
            &collector,
            &admin,
            "POST",
            "/api/v1/collections",
            Some(&b.to_string()),
            &[],
        );
        assert_eq!(code, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{v}");
    }
}

#[test]
fn evidence_is_private_on_disk_and_a_readable_data_directory_is_refused() {
    let work = workdir("hostile-private").unwrap();
    let (mut collector, _agent, host) = collector_with_agent(work.path()).unwrap();
    let c = collector
        .collect_wait(&host, "volatile", "privacy", &[], Duration::from_secs(180))
        .unwrap();
    assert_eq!(c["status"], "sealed", "{}", summary(&c));
    let mode =
        |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&collector.data), 0o700);
    let mut files = 0;
    let mut stack = vec![collector.data.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                assert_eq!(mode(&p) & 0o077, 0, "{} is {:o}", p.display(), mode(&p));
                stack.push(p);
            } else {
                files += 1;
                assert_eq!(mode(&p) & 0o077, 0, "{} is {:o}", p.display(), mode(&p));
            }
        }
    }
    assert!(files > 5, "only {files} files in the data directory");
    collector.kill();
    std::fs::set_permissions(&collector.data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let msg = format!("{:#}", collector.restart().unwrap_err());
    assert!(
        msg.contains("other users on this machine can read") && msg.contains("chmod -R go-rwx"),
        "{msg}"
    );
}

#[test]
fn downloads_record_how_they_ended_and_bodies_over_the_limit_get_413() {
    let work = workdir("hostile-download").unwrap();
    let (collector, _agent, host) = collector_with_agent(work.path()).unwrap();
    let file = work.path().join("big.bin");
    write_random_file(&file, 48 << 20, 7).unwrap();
    let c = collector
        .collect_wait(
            &host,
            "file",
            "download",
            &[&file],
            Duration::from_secs(300),
        )
        .unwrap();
    assert_eq!(c["status"], "sealed", "{}", summary(&c));
    let item = items(&c)
        .into_iter()
        .find(|i| u(i, "raw_len").unwrap() == 48 << 20)
        .unwrap();
    let id = s(&item, "id").unwrap();
    // A client that reads 1 MiB and goes away.
    let (_code, _) = curl(
        &collector,
        &collector.init.admin_token,
        "GET",
        &format!("/api/v1/items/{id}/raw"),
        None,
        &[
            "--max-filesize",
            "1048576",
            "--limit-rate",
            "2M",
            "--max-time",
            "2",
            "-o",
            "/dev/null",
        ],
    );
    let cid = s(&c, "id").unwrap();
    let aborted = wait_for("a download_aborted record", Duration::from_secs(60), || {
        let log = collector.cli_json(&["custody", "log", &cid])?;
        Ok(log["records"].as_array().and_then(|r| {
            r.iter()
                .find(|r| r["action"] == "download_aborted")
                .cloned()
        }))
    })
    .unwrap();
    assert!(
        aborted["details"]["bytes_sent"].as_u64().unwrap() < 48 << 20,
        "{aborted:#}"
    );
    let log = collector.cli_json(&["custody", "log", &cid]).unwrap();
    assert!(
        !log["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "downloaded"),
        "an aborted download is not `downloaded`: {log:#}"
    );
    // A whole download is.
    collector.export(&id, &work.path().join("out.bin")).unwrap();
    let log = collector.cli_json(&["custody", "log", &cid]).unwrap();
    assert!(log["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["action"] == "downloaded"));

    // HTTP/2 and HTTP/1.1 clients sending a body over the limit get a 413 with a JSON error.
    let big = work.path().join("big.json");
    let mut f = std::fs::File::create(&big).unwrap();
    f.write_all(&vec![b'a'; 40 << 20]).unwrap();
    drop(f);
    for v in ["--http2", "--http1.1"] {
        let (code, body) = curl(
            &collector,
            &collector.init.admin_token,
            "POST",
            "/api/v1/collections",
            None,
            &[v, "--data-binary", &format!("@{}", big.display())],
        );
        assert_eq!(code, 413, "{v}: {body}");
        assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    }
}

#[test]
fn tampered_offline_collections_are_not_sealed_and_output_is_terminal_safe() {
    let work = workdir("hostile-import").unwrap();
    let (collector, agent, host) = collector_with_agent(work.path()).unwrap();
    // An offline collection written by the real agent.
    let out = work.path().join("offline");
    let mut cmd = Command::new(bin("cairn-agent").unwrap());
    cmd.env_remove("CAIRN_AGENT_STATE")
        .args([
            "collect",
            "--profile",
            "volatile",
            "--reason",
            "offline",
            "--out",
        ])
        .arg(&out)
        .arg("--state-dir")
        .arg(&agent.state);
    run(cmd, Duration::from_secs(180)).unwrap().ok().unwrap();
    let rec: Value =
        serde_json::from_slice(&std::fs::read(out.join("collection.json")).unwrap()).unwrap();
    let first = rec["items"][0].as_str().unwrap().to_string();
    // Each tampered copy goes to a fresh collector (an offline collection's id is in its
    // frames, so copies cannot be told apart by one collector).
    let import = |dir: &std::path::Path| {
        let fresh = Collector::start(work.path()).unwrap();
        let o = fresh
            .cli_raw(
                &["import", &dir.to_string_lossy()],
                Duration::from_secs(180),
            )
            .unwrap();
        (o.json().unwrap_or(Value::Null), o, fresh)
    };
    let copy = |name: &str| {
        let to = work.path().join(name);
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(&out).arg(&to);
        run(cp, Duration::from_secs(60)).unwrap().ok().unwrap();
        to
    };
    // Trailing bytes after an item's manifest.
    let junk = copy("junk");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(junk.join("items").join(format!("{first}.cairn")))
        .unwrap();
    f.write_all(b"\x00\x00\x00\x05junk!").unwrap();
    drop(f);
    // An extra file posing as an item.
    let extra = copy("extra");
    std::fs::copy(
        extra.join("items").join(format!("{first}.cairn")),
        extra
            .join("items")
            .join("00000000-0000-0000-0000-000000000000.cairn"),
    )
    .unwrap();
    // A zeroed manifest.json.
    let zeroed = copy("zeroed");
    let m = zeroed.join("items").join(format!("{first}.manifest.json"));
    let len = std::fs::metadata(&m).unwrap().len() as usize;
    std::fs::write(&m, vec![0u8; len]).unwrap();
    for (dir, needle) in [
        (&junk, "bytes follow the manifest"),
        (&extra, "not an item of collection.json"),
        (&zeroed, "is not its manifest"),
    ] {
        let (v, o, _c) = import(dir);
        assert_ne!(
            v["status"],
            "sealed",
            "{} imported as sealed:\n{}",
            dir.display(),
            o.combined()
        );
        assert!(
            o.combined().contains(needle),
            "{}:\n{}",
            dir.display(),
            o.combined()
        );
    }
    // The untouched one imports sealed, and a second run says it is already imported.
    let (v, o, fresh) = import(&out);
    assert_eq!(v["status"], "sealed", "{}", o.combined());
    let again = fresh
        .cli_raw(
            &["import", &out.to_string_lossy()],
            Duration::from_secs(180),
        )
        .unwrap();
    assert!(
        !again.success() && again.combined().contains("already imported"),
        "{}",
        again.combined()
    );

    // A reason carrying terminal escapes is shown escaped, never raw.
    let c = collector
        .collect_wait(
            &host,
            "volatile",
            "x\u{1b}[2J\u{1b}[31mall clear",
            &[],
            Duration::from_secs(180),
        )
        .unwrap();
    let shown = collector
        .cli_text(&["show", &s(&c, "id").unwrap()], Duration::from_secs(60))
        .unwrap();
    assert!(
        !shown.stdout.contains('\u{1b}'),
        "raw escape in `cairn show`:\n{:?}",
        shown.stdout
    );
    assert!(shown.stdout.contains("\\u{1b}[2J"), "{}", shown.stdout);
    let listed = collector
        .cli_text(&["collections"], Duration::from_secs(60))
        .unwrap();
    assert!(
        !listed.stdout.contains('\u{1b}'),
        "raw escape in `cairn collections`"
    );
}

#[test]
fn containment_routes_refuse_malformed_hostile_and_oversized_bodies_and_record_nothing() {
    let work = workdir("hostile-containment").unwrap();
    let (collector, _agent, host) = collector_with_agent(work.path()).unwrap();
    let admin = collector.init.admin_token.clone();
    let big = work.path().join("big.json");
    std::fs::write(&big, format!("{{\"reason\": \"{}\"}}", "a".repeat(3 << 20))).unwrap();
    for path in ["isolation", "last-breath", "freeze"] {
        let url = format!("/api/v1/hosts/{host}/{path}");
        for (body, want) in [
            ("{\"reason\": ", 400),
            ("[1, 2, 3]", 400),
            ("{\"reason\": \"x\", \"rm\": \"-rf\"}", 400),
            ("{\"reason\": \"x\", \"container\": \"zz; rm -rf /\"}", 400),
            (
                "{\"reason\": \"x\", \"container\": \"3f2a9c4b5d6\u{e9}\u{e9}\"}",
                400,
            ),
            ("{\"reason\": \"   \"}", 400),
            ("{\"reason\": 7}", 400),
        ] {
            let (code, v) = curl(&collector, &admin, "POST", &url, Some(body), &[]);
            assert_eq!(code, want, "POST {url} {body}: {v}");
            assert!(v["error"].is_string(), "POST {url} {body}: {v}");
        }
        let long = json!({"reason": "r".repeat(2000)}).to_string();
        let (code, v) = curl(&collector, &admin, "POST", &url, Some(&long), &[]);
        assert_eq!(code, 400, "a 2000-byte reason: {v}");
        let (code, v) = curl(
            &collector,
            &admin,
            "POST",
            &url,
            None,
            &["--data-binary", &format!("@{}", big.display())],
        );
        assert_eq!(code, 413, "3 MiB to {url}: {v}");
        let (code, v) = curl(
            &collector,
            &trigger_token(&collector),
            "POST",
            &url,
            Some("{\"reason\": \"leaked\"}"),
            &[],
        );
        assert_eq!(code, 403, "the trigger role contains nothing by hand: {v}");
    }
    let (code, v) = curl(
        &collector,
        &admin,
        "POST",
        &format!("/api/v1/hosts/{host}/last-breath"),
        Some("{\"reason\": \"x\", \"pid\": 4242}"),
        &[],
    );
    assert_eq!(code, 400, "a process tree is not marked: {v}");
    let (code, v) = curl(
        &collector,
        &admin,
        "GET",
        &format!("/api/v1/hosts/{host}/containment"),
        None,
        &[],
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["history"], json!([]), "nothing refused was recorded: {v}");
}
