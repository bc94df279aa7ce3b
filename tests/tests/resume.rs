//! Resume: the collector is killed (SIGKILL) in the middle of a 300 MiB upload; once it is back,
//! the agent sends only what was not acknowledged, and the sealed item is the file, exactly.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use cairn_harness::*;

const MIB: u64 = 1 << 20;

#[test]
fn upload_resumes_after_collector_is_killed() {
    let work = workdir("resume").unwrap();
    let file = work.path().join("evidence.bin");
    let file_sha = write_random_file(&file, 300 * MIB, 0x00C0_FFEE).unwrap();
    let (mut collector, _agent, host) = collector_with_agent(work.path()).unwrap();

    let path = file.to_string_lossy().into_owned();
    let req = collector
        .cli_json(&[
            "collect",
            &host,
            "--profile",
            "file",
            "--path",
            &path,
            "--reason",
            "e2e resume",
        ])
        .unwrap();
    let cid = s(&req, "id").unwrap();

    // Wait until part of the file (>= 8 chunks of 4 MiB) is in, then pull the plug.
    let before = wait_for_every(
        "8 chunks of the file to be received",
        Duration::from_secs(120),
        Duration::from_millis(30),
        || {
            let c = collector.show(&cid)?;
            if c["status"] == "sealed" {
                anyhow::bail!("the upload finished before it could be interrupted: {c}");
            }
            Ok(items(&c).into_iter().find(|i| {
                i["chunks_received"].as_u64().unwrap_or(0) >= 8 && i["status"] != "sealed"
            }))
        },
    )
    .unwrap();
    collector.kill();
    let received_before = u(&before, "chunks_received").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    collector.restart().unwrap();

    let done = collector
        .wait_finished(&cid, Duration::from_secs(300))
        .unwrap();
    assert_eq!(done["status"], "sealed", "{}", summary(&done));
    let item = items(&done)
        .into_iter()
        .find(|i| i["source"]["path"].as_str() == Some(path.as_str()))
        .or_else(|| items(&done).into_iter().next())
        .unwrap_or_else(|| panic!("no item in {done:#}"));
    assert_eq!(
        s(&item, "sha256").unwrap(),
        file_sha,
        "item sha256: {item:#}"
    );
    assert_eq!(
        u(&item, "chunk_count").unwrap(),
        75,
        "300 MiB in 4 MiB chunks: {item:#}"
    );
    assert_eq!(
        u(&item, "duplicate_chunks").unwrap(),
        0,
        "chunks acknowledged before the kill ({received_before} of them) were sent again: {item:#}"
    );

    let out = work.path().join("exported.bin");
    collector.export(&s(&item, "id").unwrap(), &out).unwrap();
    assert_eq!(sha256_file(&out).unwrap(), file_sha, "exported bytes");
}

#[test]
fn collector_comes_back_with_its_data_after_sigkill() {
    let work = workdir("restart").unwrap();
    let mut collector = Collector::start(work.path()).unwrap();
    collector.hosts().unwrap();
    let pid = collector.pid().unwrap();
    collector.kill();
    collector.restart().unwrap();
    assert_ne!(collector.pid().unwrap(), pid, "a new process should serve");
    // Same ports, same admin token, same CA: the API answers as before.
    collector.hosts().unwrap();
}
