//! The agent under pressure (#12): a collector whose disk fills up mid-upload, an agent killed
//! mid-upload, a state directory others could read. Real binaries, a real ext4 on a loop
//! device, real kills.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_harness::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn sh(cmd: &str, args: &[&str]) {
    let mut c = Command::new(cmd);
    c.args(args);
    run(c, CLI_TIMEOUT).unwrap().ok().unwrap();
}

/// A small ext4 mounted on a loop device, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn new(work: &Path, size: &str) -> SmallDisk {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a loop device: run it as root (CI does)"
        );
        let img = work.join("collector-disk.img");
        let mnt = work.join("collector-disk");
        std::fs::create_dir_all(&mnt).unwrap();
        let img_s = img.to_str().unwrap();
        sh("truncate", &["-s", size, img_s]);
        sh("mkfs.ext4", &["-q", "-F", img_s]);
        sh("mount", &["-o", "loop", img_s, mnt.to_str().unwrap()]);
        SmallDisk(mnt)
    }

    /// (free bytes for an unprivileged writer, total bytes), as the collector computes them.
    fn space(&self) -> (u64, u64) {
        let st = nix::sys::statvfs::statvfs(&self.0).unwrap();
        let frag = st.fragment_size() as u64;
        (
            st.blocks_available() as u64 * frag,
            st.blocks() as u64 * frag,
        )
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let mut c = Command::new("umount");
        c.arg("-l").arg(&self.0);
        let _ = run(c, CLI_TIMEOUT);
    }
}

/// A file of `len` bytes that really takes room on its filesystem (not sparse).
fn ballast(path: &Path, len: u64) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(path).unwrap();
    // SAFETY: posix_fallocate on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len as libc::off_t) };
    assert_eq!(rc, 0, "posix_fallocate({}) failed: {rc}", path.display());
    f.sync_all().unwrap();
}

fn host_status(collector: &Collector, agent: &Agent) -> Value {
    collector
        .hosts()
        .unwrap()
        .into_iter()
        .find(|h| agent.is_host(h))
        .map(|h| h["status"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn a_full_collector_disk_pauses_the_upload_and_it_resumes_by_itself_without_a_storm() {
    let work = workdir("storage-full").unwrap();
    let evidence = work.path().join("evidence.bin");
    let file_sha = write_random_file(&evidence, 100 * MIB, 0xF011).unwrap();
    let chunks = 25u64;

    let disk = SmallDisk::new(work.path(), "160M");
    let bins = Bins::beside_test_exe().unwrap();
    let collector = Collector::start_in(&bins, &disk.0.join("c"), |_| Ok(())).unwrap();
    let mut agent = Agent::enroll_in(&collector, &work.path().join("agent")).unwrap();
    // No live events: the collector's database must not eat the room the test measures.
    set_agent_option(&agent.state, "sensor_enabled", "false").unwrap();
    agent.run().unwrap();
    let host = agent
        .wait_connected(&collector, Duration::from_secs(60))
        .unwrap();

    // Room for about 6 chunks above the collector's reserve (5 % of the volume).
    let (free, total) = disk.space();
    let reserve = (total / 20).min(256 * MIB);
    let fill = work.path().join("collector-disk/ballast");
    ballast(&fill, free - reserve - 24 * MIB);

    let path = evidence.to_string_lossy().into_owned();
    let req = collector
        .cli_json(&[
            "collect",
            &host,
            "--profile",
            "file",
            "--path",
            &path,
            "--reason",
            "e2e disk full",
        ])
        .unwrap();
    let cid = s(&req, "id").unwrap();
    let paused = wait_for_every(
        "the collection to be paused",
        Duration::from_secs(120),
        Duration::from_millis(100),
        || {
            let c = collector.show(&cid)?;
            if is_finished(c["status"].as_str().unwrap_or("")) {
                anyhow::bail!("the collection finished on a full disk: {}", summary(&c));
            }
            Ok((c["status"] == "paused").then_some(c))
        },
    )
    .unwrap();
    let shown = collector
        .cli_text(&["show", &cid], CLI_TIMEOUT)
        .unwrap()
        .ok()
        .unwrap();
    assert!(shown.stdout.contains("paused"), "{}", shown.stdout);
    let why = wait_for(
        "the agent's heartbeat to say uploads are paused",
        Duration::from_secs(30),
        || {
            Ok(host_status(&collector, &agent)["uploads_paused"]
                .as_str()
                .map(str::to_string))
        },
    )
    .unwrap();
    assert!(
        why.starts_with("storage full at the collector since "),
        "{why}"
    );
    // A while on a full disk: the agent waits with backoff instead of resending.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(collector.show(&cid).unwrap()["status"], "paused");

    std::fs::remove_file(&fill).unwrap();
    let done = collector
        .wait_finished(&cid, Duration::from_secs(240))
        .unwrap();
    assert_eq!(done["status"], "sealed", "{}", summary(&done));
    let item = items(&done)
        .into_iter()
        .find(|i| i["source"]["path"].as_str() == Some(path.as_str()))
        .unwrap_or_else(|| panic!("no file item in {done:#}"));
    assert_eq!(s(&item, "sha256").unwrap(), file_sha, "{item:#}");
    assert_eq!(u(&item, "chunk_count").unwrap(), chunks);
    wait_for(
        "the agent's heartbeat to stop saying uploads are paused",
        Duration::from_secs(30),
        || {
            Ok(host_status(&collector, &agent)["uploads_paused"]
                .is_null()
                .then_some(()))
        },
    )
    .unwrap();

    // No retry storm: chunks sent by the agent in all, and received by the collector.
    let log = std::fs::read_to_string(&agent.log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("item evidence.bin sealed"))
        .unwrap_or_else(|| panic!("no sealed line in the agent log:\n{}", tail_str(&log, 30)));
    let sent: u64 = line
        .split('(')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no chunk count in {line:?}"));
    assert!(
        sent <= 2 * chunks,
        "{sent} chunk sends for {chunks} chunks: {line}\nwhile paused the collector had {}",
        summary(&paused)
    );
    let received = u(&item, "chunks_received").unwrap() + u(&item, "duplicate_chunks").unwrap();
    assert!(received <= 2 * chunks, "{item:#}");
    assert_eq!(
        log.matches("the collector cannot store evidence now")
            .count(),
        1,
        "said once, not per chunk:\n{}",
        tail_str(&log, 30)
    );
    assert!(log.contains("uploads go on"), "{}", tail_str(&log, 30));
}

fn spool_files(state: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(state.join("spool")) {
        for item in rd.flatten() {
            out.push(item.path());
            if let Ok(chunks) = std::fs::read_dir(item.path()) {
                out.extend(chunks.flatten().map(|c| c.path()));
            }
        }
    }
    out
}

#[test]
fn an_agent_killed_mid_upload_leaves_no_spool_and_its_collection_fails_with_a_reason() {
    let work = workdir("agent-killed").unwrap();
    let evidence = work.path().join("evidence.bin");
    write_random_file(&evidence, 200 * MIB, 0xDEAD).unwrap();
    let (mut collector, mut agent, host) = collector_with_agent(work.path()).unwrap();
    let path = evidence.to_string_lossy().into_owned();
    let req = collector
        .cli_json(&[
            "collect",
            &host,
            "--profile",
            "file",
            "--path",
            &path,
            "--reason",
            "e2e agent killed",
        ])
        .unwrap();
    let cid = s(&req, "id").unwrap();
    wait_for_every(
        "4 chunks to be received",
        Duration::from_secs(120),
        Duration::from_millis(30),
        || {
            let c = collector.show(&cid)?;
            Ok(items(&c)
                .into_iter()
                .find(|i| i["chunks_received"].as_u64().unwrap_or(0) >= 4))
        },
    )
    .unwrap();
    // The collector goes away: the agent spools what is unacknowledged and keeps capturing.
    collector.kill();
    let spooled = wait_for("the agent to spool chunks", Duration::from_secs(60), || {
        let f = spool_files(&agent.state);
        Ok((f.iter().filter(|p| p.is_file()).count() >= 2).then_some(f))
    })
    .unwrap();
    agent.kill();
    let bytes: u64 = spooled
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    assert!(bytes > 4 * MIB, "{bytes} bytes spooled");

    collector.restart().unwrap();
    agent.run().unwrap();
    agent
        .wait_connected(&collector, Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        spool_files(&agent.state),
        Vec::<PathBuf>::new(),
        "spool left"
    );
    let done = collector
        .wait_finished(&cid, Duration::from_secs(60))
        .unwrap();
    assert_eq!(done["status"], "failed", "{}", summary(&done));
    assert!(
        done.to_string().contains("restarted while collecting"),
        "no reason: {done:#}"
    );
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(
        log.contains("removed the spool of 1 item(s) of a previous run"),
        "{}",
        tail_str(&log, 20)
    );
}

#[test]
fn the_agent_state_is_private_and_run_refuses_one_others_can_read() {
    let work = workdir("agent-private").unwrap();
    let (collector, mut agent, host) = collector_with_agent(work.path()).unwrap();
    let evidence = work.path().join("shadow-copy");
    std::fs::write(&evidence, b"root:$6$secret:19000:0:99999:7:::\n").unwrap();
    let c = collector
        .collect_wait(
            &host,
            "file",
            "e2e private",
            &[evidence.as_path()],
            Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!(c["status"], "sealed", "{}", summary(&c));

    // Everything the agent wrote is its own: directories 0700, files 0600.
    let mut seen = 0;
    let mut stack = vec![agent.state.clone()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(
            m.permissions().mode() & 0o077,
            0,
            "{} is mode {:o}",
            p.display(),
            m.permissions().mode() & 0o777
        );
        seen += 1;
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(seen >= 5, "{seen} entries");

    agent.kill();
    std::fs::set_permissions(&agent.state, std::fs::Permissions::from_mode(0o755)).unwrap();
    agent.run().unwrap();
    wait_for("cairn-agent run to refuse", Duration::from_secs(30), || {
        Ok(agent.check_alive().is_err().then_some(()))
    })
    .unwrap();
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(log.contains("other users can read"), "{log}");
    assert!(
        log.contains(&format!("chmod -R go-rwx {}", agent.state.display())),
        "{log}"
    );
}
