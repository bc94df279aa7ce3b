//! Process memory: a core captured through the collector opens in gdb with every pattern,
//! thread and frame; readelf lists the notes; an unreadable page is a recorded gap; a process
//! that exits during capture ends its item with a clear status.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_harness::*;
use serde_json::Value;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/memory_fixture.c");

/// Builds the fixture with debug info (so `bt` names its functions).
fn build_fixture(work: &Path) -> PathBuf {
    let exe = work.join("memory_fixture");
    let out = Command::new("cc")
        .args(["-g", "-O0", "-pthread", "-o"])
        .arg(&exe)
        .arg(FIXTURE)
        .output()
        .expect("cc (install gcc: `cargo xtask setup`)");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

struct Fixture {
    child: KillOnDrop,
    pid: u32,
    /// heap, stack, anon, file, trunc, big → address.
    addrs: BTreeMap<String, String>,
}

/// Starts the fixture and reads the addresses it prints.
fn start_fixture(exe: &Path, work: &Path, big_mib: u32) -> Fixture {
    let mapped = work.join("mapped.bin");
    let mut content = vec![b'x'; 100];
    content.extend_from_slice(b"CAIRN_FILE_PATTERN_a9d0");
    content.resize(8192, b'y');
    std::fs::write(&mapped, content).unwrap();
    let trunc = work.join("trunc.bin");
    std::fs::write(&trunc, vec![b'T'; 8192]).unwrap();
    let mut child = Command::new(exe)
        .arg(&mapped)
        .arg(&trunc)
        .arg(big_mib.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let child = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addrs = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    assert!(addrs.contains_key("heap"), "fixture printed {line:?}");
    Fixture { child, pid, addrs }
}

fn gdb(exe: &Path, core: &Path, commands: &[String]) -> String {
    let mut cmd = Command::new("gdb");
    cmd.args(["-batch", "-nx"]);
    for c in commands {
        cmd.arg("-ex").arg(c);
    }
    cmd.arg(exe).arg(core);
    let out = run(cmd, Duration::from_secs(120)).unwrap();
    out.combined()
}

#[test]
fn process_core_through_the_collector_opens_in_gdb() {
    let work = workdir("memory-core").unwrap();
    let exe = build_fixture(work.path());
    let fx = start_fixture(&exe, work.path(), 0);
    let (collector, _agent, host) = collector_with_agent(work.path()).unwrap();

    let pid = fx.pid.to_string();
    let out = collector
        .cli_raw(
            &[
                "collect",
                &host,
                "--profile",
                "memory",
                "--pid",
                &pid,
                "--reason",
                "e2e memory",
                "--wait",
                "--timeout",
                "300",
            ],
            Duration::from_secs(330),
        )
        .unwrap();
    let id = out
        .json()
        .ok()
        .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| panic!("{}", out.describe("cairn collect")));
    let c = collector
        .wait_finished(&id, Duration::from_secs(60))
        .unwrap();
    let name = format!("core.{}.memory_fixture", fx.pid);
    let item = item_named(&c, &name).unwrap_or_else(|| panic!("no {name}: {}", summary(&c)));
    let item_id = s(&item, "id").unwrap();
    // The whole collection is `partial`: the core has a recorded gap (the cut-off page).
    let m = collector.cli_json(&["item", &item_id]).unwrap();
    assert_eq!(m["status"], "sealed", "{m:#}");
    assert_eq!(m["acquisition_status"], "partial", "{m:#}");
    let gaps = m["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "one unreadable page expected: {gaps:?}");
    let trunc = u64::from_str_radix(fx.addrs["trunc"].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(gaps[0]["length"], 4096);
    assert!(
        gaps[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{trunc:#x}: ")),
        "the gap names the page's address: {gaps:?}"
    );
    assert_eq!(gaps[0]["filled_with"], "zeros");
    // Mapped files: the fixture itself with its build-id and SHA-256.
    let files = m.pointer("/source/details/mapped_files").unwrap();
    let me = files
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == exe.to_string_lossy().as_ref())
        .unwrap_or_else(|| panic!("fixture not among mapped files: {files}"));
    assert_eq!(me["sha256"], sha256_file(&exe).unwrap());
    assert!(
        me["build_id"].as_str().is_some_and(|b| b.len() == 40),
        "{me}"
    );
    assert!(me["inode"].as_u64().unwrap() > 0);

    let core = work.path().join("fixture.core");
    collector.export(&item_id, &core).unwrap();

    // readelf -n lists the notes gdb and lldb need.
    let notes = Command::new("readelf")
        .arg("-n")
        .arg(&core)
        .output()
        .unwrap();
    let notes = String::from_utf8_lossy(&notes.stdout);
    for n in [
        "NT_PRSTATUS",
        "NT_PRPSINFO",
        "NT_FPREGSET",
        "NT_SIGINFO",
        "NT_AUXV",
        "NT_FILE",
    ] {
        assert!(notes.contains(n), "readelf -n does not list {n}");
    }
    assert_eq!(
        notes.matches("NT_PRSTATUS").count(),
        4,
        "one NT_PRSTATUS per thread (main + 3)"
    );

    let mut cmds: Vec<String> = ["heap", "stack", "anon", "file"]
        .iter()
        .map(|k| format!("x/s {}", fx.addrs[*k]))
        .collect();
    cmds.extend(["info threads".into(), "bt".into()]);
    let text = gdb(&exe, &core, &cmds);
    for (k, pat) in [
        ("heap", "CAIRN_HEAP_PATTERN_7f3a"),
        ("stack", "CAIRN_STACK_PATTERN_19c2"),
        ("anon", "CAIRN_ANON_PATTERN_55e1"),
        ("file", "CAIRN_FILE_PATTERN_a9d0"),
    ] {
        let want = format!("{}:\t\"{pat}", fx.addrs[k]);
        assert!(
            text.contains(&want),
            "gdb did not read {k} ({want}):\n{text}"
        );
    }
    for t in 1..=4 {
        assert!(
            text.lines().any(|l| l
                .trim_start_matches(['*', ' '])
                .starts_with(&format!("{t} "))
                && l.contains("LWP")),
            "info threads lacks thread {t}:\n{text}"
        );
    }
    assert!(
        text.contains("in wait_here ()") && text.contains("in main ("),
        "bt does not reach main through wait_here:\n{text}"
    );
    assert!(!text.contains("too small"), "gdb complains:\n{text}");
    drop(fx.child);
}

#[test]
fn a_process_exiting_during_capture_ends_its_item_clearly() {
    let work = workdir("memory-exit").unwrap();
    let exe = build_fixture(work.path());
    // 768 MiB of incompressible data: capture takes long enough to kill the process midway.
    let mut fx = start_fixture(&exe, work.path(), 768);
    let out_dir = work.path().join("capture");
    let mut cmd = Command::new(bin("cairn-agent").unwrap());
    cmd.env_remove("CAIRN_AGENT_STATE")
        .args(["capture", "memory", "--pid", &fx.pid.to_string(), "--out"])
        .arg(&out_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let capture = cmd.spawn().unwrap();
    // Kill the fixture once a few chunks of its core are written.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let written: u64 = std::fs::read_dir(out_dir.join("items"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "cairn"))
                    .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        if written > 16 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "capture wrote nothing in 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    fx.child.0.kill().unwrap();
    fx.child.0.wait().unwrap();
    let out = capture.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    assert!(out.status.success(), "capture failed:\n{text}");

    let mut manifests = std::fs::read_dir(out_dir.join("items"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"));
    let m: Value =
        serde_json::from_slice(&std::fs::read(manifests.next().unwrap().path()).unwrap()).unwrap();
    assert_eq!(m["status"], "source_vanished", "{:#}", m["error"]);
    assert!(
        m["error"]
            .as_str()
            .unwrap()
            .contains("exited during capture"),
        "{}",
        m["error"]
    );
    let gaps = m["gaps"].as_array().unwrap();
    let last = gaps.last().expect("the unread rest is recorded as gaps");
    assert_eq!(
        last["offset"].as_u64().unwrap() + last["length"].as_u64().unwrap(),
        m["raw_len"].as_u64().unwrap(),
        "gaps run to the end of the core"
    );
    assert!(gaps
        .iter()
        .any(|g| g["reason"].as_str().unwrap().contains("exited")));
    // The collection itself finished and can be imported.
    let record: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("collection.json")).unwrap()).unwrap();
    assert_eq!(record["status"], "partial", "{record:#}");
}
