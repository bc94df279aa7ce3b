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
    let mut bytes = collector
        .read_stored_chunk(&h)
        .unwrap_or_else(|e| panic!("cannot read stored chunk {h}: {e:#}"));
    assert!(!bytes.is_empty(), "stored chunk {h} is empty");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    collector.write_stored_chunk(&h, &bytes).unwrap();

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

/// Runs SQL against the collector's database (SQLite or PostgreSQL, the collector may be
/// running), as someone with access to it would.
fn sql(collector: &Collector, statements: &str) -> String {
    collector.sql(statements).unwrap()
}

fn verify(collector: &Collector, cid: &str) -> (bool, String) {
    let out = collector
        .cli_raw(&["custody", "verify", cid], Duration::from_secs(120))
        .unwrap();
    (out.success(), out.combined())
}

#[test]
fn custody_verify_proves_completeness_truncation_swaps_and_strays_are_named() {
    let work = workdir("custody-complete").unwrap();
    let (collector, _agent, host) = collector_with_agent(work.path()).unwrap();
    let collection = collector
        .collect_wait(
            &host,
            "volatile",
            "e2e completeness",
            &[],
            Duration::from_secs(180),
        )
        .unwrap();
    assert_eq!(collection["status"], "sealed", "{}", summary(&collection));
    let cid = s(&collection, "id").unwrap();
    let (ok, text) = verify(&collector, &cid);
    assert!(ok, "an untouched collection verifies:\n{text}");
    let log = collector.cli_json(&["custody", "log", &cid]).unwrap();
    let records = log["records"].as_array().unwrap().clone();
    let last = records.last().unwrap();
    assert_eq!(last["action"], "verified", "{last:#}");
    let fin = records
        .iter()
        .rev()
        .find(|r| r["action"] == "collection_finished")
        .unwrap_or_else(|| panic!("no collection_finished in {log:#}"));
    let committed = fin["details"]["commitment"]["items"].as_array().unwrap();
    assert_eq!(
        committed.len(),
        items(&collection).len(),
        "the final record commits to every item: {fin:#}"
    );

    // The attack the old verify missed: keep the chain up to the first seal, delete the rest,
    // and point another item (whose seal went with the deleted rows) at other chunks.
    let first_seal = records
        .iter()
        .find(|r| r["action"] == "item_sealed")
        .unwrap();
    let keep = u(first_seal, "seq").unwrap();
    let kept_item = first_seal["details"]["item_id"]
        .as_str()
        .unwrap()
        .to_string();
    let victim = items(&collection)
        .into_iter()
        .find(|i| s(i, "id").unwrap() != kept_item && u(i, "raw_len").unwrap() > 0)
        .unwrap();
    let donor = items(&collection)
        .into_iter()
        .find(|i| {
            let id = s(i, "id").unwrap();
            id != kept_item && id != s(&victim, "id").unwrap() && u(i, "raw_len").unwrap() > 0
        })
        .unwrap();
    let (v, d) = (s(&victim, "id").unwrap(), s(&donor, "id").unwrap());
    sql(
        &collector,
        &format!(
            "DELETE FROM custody WHERE collection_id = '{cid}' AND seq > {keep};
             DELETE FROM item_chunks WHERE item_id = '{v}';
             INSERT INTO item_chunks(item_id, idx, sha256, raw_len) SELECT '{v}', idx, sha256, raw_len FROM item_chunks WHERE item_id = '{d}';
             UPDATE items SET sha256 = (SELECT sha256 FROM items WHERE id = '{d}'), raw_len = (SELECT raw_len FROM items WHERE id = '{d}'),
                              chunk_count = (SELECT chunk_count FROM items WHERE id = '{d}') WHERE id = '{v}'"
        ),
    );
    let (ok, text) = verify(&collector, &cid);
    assert!(!ok, "verify must fail after truncation and a swap:\n{text}");
    assert!(
        text.contains("were deleted"),
        "verify names the deleted newest records:\n{text}"
    );
    assert!(
        text.contains(&v) && text.contains("not in the custody chain"),
        "verify names the swapped item {v} as missing from the chain:\n{text}"
    );
    assert!(
        text.contains("no final record"),
        "verify says the sealed collection has lost its final record:\n{text}"
    );
    // Exporting the swapped item must not claim it matches anything.
    let out_file = work.path().join("swapped.bin");
    let out = collector
        .cli_raw(
            &["export", &v, "-o", &out_file.to_string_lossy()],
            Duration::from_secs(120),
        )
        .unwrap();
    assert!(
        !out.success() && !out.combined().contains("matches"),
        "{}",
        out.describe("must refuse to export an item that no longer matches custody")
    );
    assert!(
        !out_file.exists(),
        "nothing is written under the output name"
    );
}

#[test]
fn a_stray_item_and_a_missing_head_log_are_caught() {
    let work = workdir("custody-stray").unwrap();
    let (mut collector, _agent, host) = collector_with_agent(work.path()).unwrap();
    let collection = collector
        .collect_wait(
            &host,
            "volatile",
            "e2e stray",
            &[],
            Duration::from_secs(180),
        )
        .unwrap();
    assert_eq!(collection["status"], "sealed", "{}", summary(&collection));
    let cid = s(&collection, "id").unwrap();
    // An item that never came through ingest, added to the collection in the database.
    sql(
        &collector,
        &format!(
            "INSERT INTO items(id, collection_id, name, kind, header_json, status, started_at, sha256, raw_len, chunk_count)
             SELECT 'planted-item', '{cid}', 'planted.bin', kind, header_json, 'sealed', started_at, sha256, raw_len, chunk_count
             FROM items WHERE collection_id = '{cid}' LIMIT 1"
        ),
    );
    let (ok, text) = verify(&collector, &cid);
    assert!(!ok, "verify must fail with a planted item:\n{text}");
    assert!(
        text.contains("planted-item") && text.contains("not in the custody chain"),
        "{text}"
    );

    // The heads removed (the head log with its append-only flag first, as root could; or
    // every head in the bucket): the collector refuses to start, and says how to proceed.
    collector.kill();
    collector.remove_heads().unwrap();
    let err = collector.restart().unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        (msg.contains("custody-heads.jsonl is missing") || msg.contains("holds no custody heads"))
            && msg.contains("publish-heads"),
        "{msg}"
    );
}
