//! The spine of cairn: a detection system asks for a collection over HTTP, the agent captures
//! volatile state, the collector seals it, and every exported byte matches its manifest.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_harness::*;
use serde_json::Value;

#[test]
fn volatile_collection_is_sealed_and_exports_match_manifests() {
    let work = workdir("spine").unwrap();
    let (collector, _agent, host) = collector_with_agent(work.path()).unwrap();

    // A process the test owns, recognisable by a unique (and valid) extra sleep operand.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let marker = format!("0.{:06}{:09}", std::process::id() % 1_000_000, nanos);
    let sleeper = KillOnDrop(
        Command::new("/bin/sleep")
            .arg("300")
            .arg(&marker)
            .spawn()
            .unwrap(),
    );
    let sleeper_pid = sleeper.0.id();
    std::thread::sleep(Duration::from_millis(200));

    let collection = collector
        .collect_wait(
            &host,
            "volatile",
            "e2e spine: suspicious sleep",
            &[],
            Duration::from_secs(180),
        )
        .unwrap();
    assert_eq!(
        collection["status"],
        "sealed",
        "collection did not seal: {}",
        summary(&collection)
    );
    let list = items(&collection);
    assert!(
        !list.is_empty(),
        "sealed collection has no items: {}",
        summary(&collection)
    );

    // Every item: the exported bytes' sha256sum equals the manifest's SHA-256.
    for item in &list {
        let id = s(item, "id").unwrap();
        assert_eq!(item["status"], "sealed", "item not sealed: {item:#}");
        let manifest = collector.api_get(&format!("/api/v1/items/{id}")).unwrap();
        let manifest_sha = s(&manifest, "sha256").unwrap();
        assert_eq!(
            s(item, "sha256").unwrap(),
            manifest_sha,
            "collection listing and item manifest disagree for {id}"
        );
        let out = work.path().join(format!("export-{id}"));
        collector.export(&id, &out).unwrap();
        let got = sha256sum_cli(&out).unwrap();
        assert_eq!(
            got,
            manifest_sha,
            "sha256sum of exported item {id} ({}) differs from its manifest",
            item.pointer("/source/name").unwrap_or(&Value::Null)
        );
        assert_eq!(
            std::fs::metadata(&out).unwrap().len(),
            u(&manifest, "raw_len").unwrap(),
            "exported length of {id} differs from the manifest's raw_len"
        );
    }

    // The process list shows our sleep, its parent (this test) and the hash of its executable.
    let procs_item = item_named(&collection, "processes.json").unwrap_or_else(|| {
        panic!(
            "no item with source.name == \"processes.json\" in {}",
            summary(&collection)
        )
    });
    let procs_id = s(&procs_item, "id").unwrap();
    let path = work.path().join(format!("export-{procs_id}"));
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let procs = doc["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("processes.json has no top-level \"processes\" array"));
    let entry = procs
        .iter()
        .find(|p| {
            p["cmdline"]
                .as_array()
                .is_some_and(|c| c.iter().any(|a| a.as_str() == Some(marker.as_str())))
        })
        .unwrap_or_else(|| {
            panic!(
                "the test's `/bin/sleep 300 {marker}` (pid {sleeper_pid}) is not in processes.json \
                 ({} processes listed)",
                procs.len()
            )
        });
    assert_eq!(
        entry["pid"].as_u64(),
        Some(u64::from(sleeper_pid)),
        "pid of the marker sleep: {entry:#}"
    );
    assert_eq!(
        entry["ppid"].as_u64(),
        Some(u64::from(std::process::id())),
        "ppid of the marker sleep should be the test process: {entry:#}"
    );
    let real = std::fs::canonicalize("/bin/sleep").unwrap();
    let want = sha256_file(&real).unwrap();
    assert_eq!(
        entry["exe_sha256"].as_str(),
        Some(want.as_str()),
        "exe_sha256 of the marker sleep should be SHA-256 of {}: {entry:#}",
        real.display()
    );
    drop(sleeper);
}
