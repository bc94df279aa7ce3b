//! Chain of custody: an intact collection verifies; one flipped byte in stored evidence is
//! detected and the broken item is named.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use cairn_harness::*;

#[test]
fn custody_verify_detects_a_flipped_byte_in_a_stored_chunk() {
    let work = workdir("custody").unwrap();
    let (collector, _agent, host) = collector_with_agent(work.path()).unwrap();
    let collection = collector
        .collect_wait(
            &host,
            "volatile",
            "e2e custody",
            &[],
            Duration::from_secs(180),
        )
        .unwrap();
    assert_eq!(collection["status"], "sealed", "{}", summary(&collection));
    let cid = s(&collection, "id").unwrap();

    let ok = collector
        .cli_raw(&["custody", "verify", &cid], Duration::from_secs(120))
        .unwrap();
    assert!(
        ok.success(),
        "{}",
        ok.describe("should succeed on an untouched collection")
    );

    // Corrupt the first stored chunk of processes.json (non-empty raw content).
    let item = item_named(&collection, "processes.json")
        .unwrap_or_else(|| panic!("no processes.json item in {}", summary(&collection)));
    let item_id = s(&item, "id").unwrap();
    assert!(
        u(&item, "raw_len").unwrap() > 0,
        "processes.json is empty: {item:#}"
    );
    let manifest = collector
        .api_get(&format!("/api/v1/items/{item_id}"))
        .unwrap();
    let h = manifest["chunk_sha256"][0]
        .as_str()
        .unwrap_or_else(|| panic!("manifest has no chunk_sha256[0]: {manifest:#}"))
        .to_string();
    let chunk = collector.data.join("chunks").join(&h[..2]).join(&h);
    let mut bytes = std::fs::read(&chunk).unwrap_or_else(|e| {
        panic!(
            "cannot read stored chunk {} ({e}); the chunk store should be DATA/chunks/<2 hex>/<sha256>",
            chunk.display()
        )
    });
    assert!(
        !bytes.is_empty(),
        "stored chunk {} is empty",
        chunk.display()
    );
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&chunk, &bytes).unwrap();

    let bad = collector
        .cli_raw(&["custody", "verify", &cid], Duration::from_secs(120))
        .unwrap();
    assert!(
        !bad.success(),
        "{}",
        bad.describe("should fail after a byte of a stored chunk was flipped")
    );
    let text = bad.combined();
    assert!(
        text.contains(&item_id) || text.contains("processes.json"),
        "custody verify should name the broken item ({item_id} / processes.json):\n{text}"
    );
}
