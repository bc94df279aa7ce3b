//! Offline collection: `cairn-agent collect --out DIR` on a host without a network, then
//! `cairn import DIR` on a collector gives the same evidence, byte for byte.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use cairn_harness::*;
use serde_json::Value;

#[test]
fn offline_collection_imports_byte_for_byte() {
    let work = workdir("offline").unwrap();
    let out_dir = work.path().join("offline-collection");
    let mut cmd = Command::new(bin("cairn-agent").unwrap());
    cmd.env_remove("CAIRN_AGENT_STATE")
        .args([
            "collect",
            "--profile",
            "volatile",
            "--reason",
            "e2e offline",
            "--out",
        ])
        .arg(&out_dir);
    run(cmd, Duration::from_secs(180)).unwrap().ok().unwrap();
    assert!(
        out_dir.join("collection.json").is_file(),
        "no collection.json in {}",
        out_dir.display()
    );

    // What the agent wrote: item id -> sha256, from DIR/items/*.manifest.json.
    let mut on_disk: BTreeMap<String, String> = BTreeMap::new();
    for entry in std::fs::read_dir(out_dir.join("items")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".manifest.json") {
            let m: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let id = m["item_id"].as_str().unwrap_or(stem).to_string();
            on_disk.insert(id, s(&m, "sha256").unwrap());
        }
    }
    assert!(
        !on_disk.is_empty(),
        "no *.manifest.json under {}/items",
        out_dir.display()
    );

    let collector = Collector::start(work.path()).unwrap();
    let dir = out_dir.to_string_lossy().into_owned();
    let imported = collector
        .cli_raw(&["import", &dir], Duration::from_secs(300))
        .unwrap();
    // `import --json` prints the collection (or its id); a non-zero exit for a partial
    // collection still prints it, and the status assertion below explains the failure.
    let cid = match imported.json() {
        Ok(v) => v["id"]
            .as_str()
            .or(v["collection_id"].as_str())
            .unwrap_or_else(|| panic!("{}", imported.describe("printed no collection id")))
            .to_string(),
        Err(_) => {
            assert!(imported.success(), "{}", imported.describe("failed"));
            imported.stdout.trim().to_string()
        }
    };
    let collection = collector.show(&cid).unwrap();
    assert_eq!(collection["status"], "sealed", "{}", summary(&collection));

    let mut in_collector: BTreeMap<String, String> = BTreeMap::new();
    for item in items(&collection) {
        assert_eq!(
            item["status"], "sealed",
            "imported item not sealed: {item:#}"
        );
        in_collector.insert(s(&item, "id").unwrap(), s(&item, "sha256").unwrap());
    }
    assert_eq!(
        in_collector, on_disk,
        "imported items (id -> sha256) differ from the offline manifests"
    );

    // One exported item is the exact bytes.
    let (id, sha) = on_disk.iter().next().unwrap();
    let out = work.path().join("exported");
    collector.export(id, &out).unwrap();
    assert_eq!(&sha256sum_cli(&out).unwrap(), sha, "exported item {id}");
}
