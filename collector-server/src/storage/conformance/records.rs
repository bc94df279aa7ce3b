//! Tokens, hosts, collections, items, custody, live events and readiness: the same answers
//! from every back end; the fixtures the other groups' tests share.

use super::{on_both, Backend};
use crate::storage::{
    CollectionOrigin, CollectionStatus, ContainmentRow, ContainmentStatus, EnrollRefusal,
    ItemStatus, LiveEvent, MetadataStore, Role, StorageError,
};
use cairn_protocol::chunk::Codec;
use cairn_protocol::custody::CustodyRecord;
use cairn_protocol::manifest::{CollectRequest, HostIdentity, ItemHeader, ItemKind, ItemManifest};
use cairn_protocol::readiness::{CheckResult, CheckStatus, SelftestReport};

on_both!(
    tokens_are_stored_hashed_and_used_up,
    an_import_finds_its_host_by_machine_id_then_by_name,
    a_machine_enrolled_again_is_found_unless_its_instance_differs,
    hosts_are_listed_found_and_retired,
    collections_live_queue_and_prune,
    items_count_chunks_and_duplicates,
    custody_appends_once_per_seq_and_reads_back_exactly,
    live_events_are_found_by_host_time_and_kind,
    readiness_keeps_a_history_and_a_verdict,
);

pub(super) fn ident(name: &str, mid: Option<&str>, instance: Option<&str>) -> HostIdentity {
    HostIdentity {
        hostname: name.into(),
        machine_id: mid.map(str::to_string),
        cloud: instance.map(|i| cairn_protocol::manifest::CloudIdentity {
            provider: "aws".into(),
            instance_id: Some(i.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn request(id: &str) -> CollectRequest {
    CollectRequest {
        collection_id: id.into(),
        profile: "triage".into(),
        reason: format!("why {id}"),
        requested_by: "api:alice".into(),
        paths: vec![],
        pid: Some(42),
        container_id: None,
        devices: vec![],
    }
}

pub(super) fn header(item: &str, collection: &str) -> ItemHeader {
    ItemHeader {
        item_id: item.into(),
        collection_id: collection.into(),
        kind: ItemKind::File,
        source: cairn_protocol::manifest::Source {
            name: format!("{item}.bin"),
            ..Default::default()
        },
        chunk_size: 4,
        acquisition_start: "2026-11-29T10:00:00Z".into(),
        expected_len: None,
    }
}

pub(super) fn manifest(h: &ItemHeader, len: u64, chunks: u64) -> ItemManifest {
    ItemManifest {
        header: h.clone(),
        host: Default::default(),
        acquisition_end: "2026-11-29T10:05:00Z".into(),
        raw_len: len,
        sha256: "ab".repeat(32),
        chunk_count: chunks,
        chunk_sha256: Vec::new(),
        gaps: Vec::new(),
        status: cairn_protocol::manifest::ItemStatus::Complete,
        error: None,
        tool: "test".into(),
    }
}

pub(super) fn record(collection: &str, seq: u64, details: serde_json::Value) -> CustodyRecord {
    CustodyRecord {
        collection_id: collection.into(),
        seq,
        time: format!("2026-11-29T10:00:0{}Z", seq % 10),
        actor: "collector".into(),
        action: "trigger_received".into(),
        details,
        prev_hash: "0".repeat(64),
        hash: format!("{seq:064}"),
        signature: "sig".into(),
    }
}

pub(super) fn report(status: CheckStatus, started: &str) -> SelftestReport {
    SelftestReport {
        schema_version: 1,
        started: started.into(),
        duration_ms: 5,
        hostname: "web-1".into(),
        agent_version: "0.1.0".into(),
        status,
        checks: vec![CheckResult {
            id: "kernel".into(),
            status,
            measured: "6.1".into(),
            remediation: String::new(),
            duration_ms: 1,
        }],
    }
}

pub(super) fn containment_row(id: &str, host: &str, at: &str) -> ContainmentRow {
    use cairn_protocol::containment::{Action, Request, Target};
    ContainmentRow {
        id: id.into(),
        host_id: host.into(),
        request: Request {
            id: id.into(),
            action: Action::Isolate,
            target: Target::Host,
            allow: vec![],
            reason: format!("r-{id}"),
            requested_by: "admin".into(),
        },
        status: ContainmentStatus::Requested,
        requested_at: at.into(),
        updated_at: at.into(),
        outcome: None,
    }
}

fn tokens_are_stored_hashed_and_used_up(s: &dyn MetadataStore, _: Backend) {
    let secret = s.create_api_token("alice", Role::Analyst).unwrap();
    assert_eq!(
        s.check_api_token(&secret).unwrap(),
        Some(("alice".into(), Role::Analyst))
    );
    assert_eq!(s.check_api_token("cairn_api_wrong").unwrap(), None);
    let (et, expires) = s.create_enroll_token(2, 3600, "fleet").unwrap();
    assert!(expires > crate::unix_now());
    assert_eq!(s.consume_enroll_token(&et).unwrap(), Ok(()));
    assert_eq!(s.consume_enroll_token(&et).unwrap(), Ok(()));
    assert_eq!(
        s.consume_enroll_token(&et).unwrap(),
        Err(EnrollRefusal::Exhausted(2))
    );
    assert_eq!(
        s.consume_enroll_token("nope").unwrap(),
        Err(EnrollRefusal::Unknown)
    );
    let (expired, _) = s.create_enroll_token(1, -10, "old").unwrap();
    assert!(matches!(
        s.consume_enroll_token(&expired).unwrap(),
        Err(EnrollRefusal::Expired(_))
    ));
    let list = s.list_tokens().unwrap();
    assert_eq!(list.len(), 3);
    // Ids are the secrets' hashes' first 12 digits, never the secrets.
    let id = &cairn_protocol::sha256_hex(secret.as_bytes())[..12];
    let api = list.iter().find(|t| t.kind == "api").unwrap();
    assert_eq!(api.id, id);
    assert_eq!(api.name, "alice");
    let fleet = list.iter().find(|t| t.name == "fleet").unwrap();
    assert_eq!(fleet.uses_left, Some(0));
    // By id prefix, then by name.
    assert_eq!(s.revoke_tokens(id).unwrap(), 1);
    assert_eq!(s.check_api_token(&secret).unwrap(), None);
    assert_eq!(s.revoke_tokens(id).unwrap(), 0);
    let other = s.create_api_token("bob", Role::Viewer).unwrap();
    assert_eq!(s.revoke_tokens("bob").unwrap(), 1);
    assert_eq!(s.check_api_token(&other).unwrap(), None);
    let (et2, _) = s.create_enroll_token(5, 3600, "x").unwrap();
    let et2_id = &cairn_protocol::sha256_hex(et2.as_bytes())[..8];
    assert_eq!(s.revoke_tokens(et2_id).unwrap(), 1);
    assert!(matches!(
        s.consume_enroll_token(&et2).unwrap(),
        Err(EnrollRefusal::Revoked(_))
    ));
}

fn an_import_finds_its_host_by_machine_id_then_by_name(s: &dyn MetadataStore, _: Backend) {
    s.insert_enrolled_host("h-enrolled", "web-1", "fp1")
        .unwrap();
    s.set_enrolled_identity("h-enrolled", &ident("web-1", Some("m1"), None))
        .unwrap();
    // The same machine, whatever the image calls itself.
    let id = s
        .upsert_import_host(&ident("renamed", Some("m1"), None))
        .unwrap();
    assert_eq!(id, "h-enrolled");
    // Another machine of another name: a new host, found again by the next import.
    let img = s
        .upsert_import_host(&ident("image-host", Some("m2"), None))
        .unwrap();
    assert_ne!(img, "h-enrolled");
    assert_eq!(s.get_host(&img).unwrap().unwrap().hostname, "image-host");
    assert_eq!(
        s.upsert_import_host(&ident("image-host", Some("m2"), None))
            .unwrap(),
        img
    );
    // No machine id: the one host of that name.
    assert_eq!(
        s.upsert_import_host(&ident("image-host", None, None))
            .unwrap(),
        img
    );
    // A name shared by a host of another machine id is another host.
    let other = s
        .upsert_import_host(&ident("image-host", Some("m3"), None))
        .unwrap();
    assert!(other != img && other != "h-enrolled");
    assert_eq!(s.list_hosts().unwrap().len(), 3);
}

fn a_machine_enrolled_again_is_found_unless_its_instance_differs(
    s: &dyn MetadataStore,
    _: Backend,
) {
    s.insert_enrolled_host("h1", "web-1", "fp1").unwrap();
    s.set_enrolled_identity("h1", &ident("web-1", Some("m1"), Some("i-1")))
        .unwrap();
    assert_eq!(
        s.enrolled_host_of_machine("m1", Some("i-1")).unwrap(),
        Some("h1".into())
    );
    assert_eq!(
        s.enrolled_host_of_machine("m1", None).unwrap(),
        Some("h1".into())
    );
    // The machine id of an image cloned into another instance.
    assert_eq!(s.enrolled_host_of_machine("m1", Some("i-2")).unwrap(), None);
    assert_eq!(s.enrolled_host_of_machine("m9", None).unwrap(), None);
    s.reenroll_host("h1", "web-1b", "fp2").unwrap();
    assert_eq!(s.host_id_by_cert("fp1").unwrap(), None);
    assert_eq!(s.host_id_by_cert("fp2").unwrap(), Some("h1".into()));
    assert!(s.retire_host("h1", "gone").unwrap());
    assert_eq!(s.enrolled_host_of_machine("m1", None).unwrap(), None);
}

fn hosts_are_listed_found_and_retired(s: &dyn MetadataStore, _: Backend) {
    s.insert_enrolled_host("h_1", "web-b", "c1").unwrap();
    s.insert_enrolled_host("hx1", "web-a", "c2").unwrap();
    s.insert_enrolled_host("zz", "Web-a", "c3").unwrap();
    // A certificate is one host's.
    assert!(matches!(
        s.insert_enrolled_host("h2", "dup", "c1"),
        Err(StorageError::Conflict(_))
    ));
    // Byte order: capitals first.
    let names: Vec<String> = s.list_hosts().unwrap().into_iter().map(|h| h.id).collect();
    assert_eq!(names, ["zz", "hx1", "h_1"]);
    s.update_host_identity("hx1", &ident("web-a", Some("m-a"), Some("i-a")), "1.2.3")
        .unwrap();
    let h = s.get_host("hx1").unwrap().unwrap();
    assert_eq!(h.agent_version.as_deref(), Some("1.2.3"));
    assert_eq!(h.instance_id.as_deref(), Some("i-a"));
    assert!(h.last_seen.is_some());
    s.touch_host("h_1").unwrap();
    let found: Vec<String> = s
        .find_hosts("web-a")
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(found, ["hx1"]);
    assert_eq!(s.find_hosts("i-a").unwrap().len(), 1);
    // `_` is a character, not a wildcard.
    let pre: Vec<String> = s
        .hosts_with_id_prefix("h_", 10)
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(pre, ["h_1"]);
    assert_eq!(s.hosts_with_id_prefix("h", 1).unwrap().len(), 1);
    assert!(s.retire_host("h_1", "decommissioned").unwrap());
    assert!(!s.retire_host("h_1", "again").unwrap());
    assert!(!s.retire_host("nope", "x").unwrap());
    assert!(s.hosts_with_id_prefix("h_", 10).unwrap().is_empty());
    assert!(s.find_hosts("web-b").unwrap().is_empty());
    // By its id a retired host is still found.
    let h = s.find_hosts("h_1").unwrap();
    assert_eq!(h[0].retired_reason.as_deref(), Some("decommissioned"));
    assert_eq!(s.host_id_by_cert("c1").unwrap(), None);
}

fn collections_live_queue_and_prune(s: &dyn MetadataStore, _: Backend) {
    s.insert_enrolled_host("h", "web", "c").unwrap();
    for (id, status, origin) in [
        ("c-1", CollectionStatus::Requested, CollectionOrigin::Live),
        ("c-2", CollectionStatus::Queued, CollectionOrigin::Live),
        ("c-3", CollectionStatus::Running, CollectionOrigin::Live),
        ("st-1", CollectionStatus::Sealed, CollectionOrigin::Selftest),
        ("st-2", CollectionStatus::Sealed, CollectionOrigin::Selftest),
    ] {
        s.insert_collection("h", &request(id), status, origin)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(matches!(
        s.insert_collection(
            "h",
            &request("c-1"),
            CollectionStatus::Requested,
            CollectionOrigin::Live
        ),
        Err(StorageError::Conflict(m)) if m.contains("c-1")
    ));
    let pending: Vec<String> = s
        .pending_requests("h")
        .unwrap()
        .into_iter()
        .map(|r| r.collection_id)
        .collect();
    assert_eq!(pending, ["c-1", "c-2"]);
    // How an instance learns of requests made through another: one answer for many hosts.
    let hosts = ["h".to_string(), "other".to_string(), "\0odd".to_string()];
    assert_eq!(s.hosts_with_requested(&hosts).unwrap(), ["h"]);
    assert!(s.hosts_with_requested(&[]).unwrap().is_empty());
    assert_eq!(s.running_collections(None).unwrap(), 1);
    assert_eq!(s.running_collections(Some("h")).unwrap(), 1);
    assert_eq!(s.running_collections(Some("other")).unwrap(), 0);
    let listed: Vec<String> = s
        .list_collections(None, None, 10)
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, ["c-3", "c-2", "c-1"]);
    assert_eq!(s.list_collections(Some("h"), None, 2).unwrap().len(), 2);
    // Paging: the rows after `before`, in the same order; walking pages of one sees each once.
    let ids = |before: Option<&str>, n| -> Vec<String> {
        s.list_collections(None, before, n)
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect()
    };
    assert_eq!(ids(Some("c-3"), 10), ["c-2", "c-1"]);
    assert_eq!(ids(Some("c-2"), 1), ["c-1"]);
    assert!(ids(Some("c-1"), 10).is_empty());
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = ids(cursor.as_deref(), 1);
        let Some(last) = page.last().cloned() else {
            break;
        };
        walked.extend(page);
        cursor = Some(last);
    }
    assert_eq!(walked, ["c-3", "c-2", "c-1"]);
    assert_eq!(s.collection_ids_with_prefix("c-", 10).unwrap().len(), 3);
    assert_eq!(s.collection_ids_with_prefix("c-3", 10).unwrap(), ["c-3"]);
    s.set_collection_status("c-3", CollectionStatus::Partial, Some(&["disk".into()]))
        .unwrap();
    let c = s.get_collection("c-3").unwrap().unwrap();
    assert_eq!(c.status, CollectionStatus::Partial);
    assert!(c.finished_at.is_some());
    assert_eq!(c.errors, ["disk"]);
    assert_eq!(c.request.unwrap().pid, Some(42));
    assert!(s.get_collection("none").unwrap().is_none());
    // Self-test collections other than the kept one go, with what only they used.
    for (item, coll, sha) in [
        ("i-1", "st-1", "aa"),
        ("i-2", "st-2", "bb"),
        ("i-3", "c-3", "bb"),
    ] {
        s.insert_item(&header(item, coll)).unwrap();
        s.record_chunk(item, 0, sha, 4, Codec::Zstd, 3).unwrap();
    }
    s.insert_custody(&record("st-1", 0, serde_json::json!({})))
        .unwrap();
    assert_eq!(s.prune_selftest_collections("h", "st-2").unwrap(), ["aa"]);
    assert!(s.get_collection("st-1").unwrap().is_none());
    assert!(s.get_item("i-1").unwrap().is_none());
    assert!(s.custody_records("st-1").unwrap().is_empty());
    assert!(s.blob_codec("aa").unwrap().is_none());
    // bb is used by a kept item: not an orphan.
    assert!(s
        .prune_selftest_collections("h", "st-9")
        .unwrap()
        .is_empty());
    assert!(s.blob_codec("bb").unwrap().is_some());
    // The dispatcher's questions: which hosts have queued work and room, oldest first.
    s.insert_enrolled_host("g", "db", "cg").unwrap();
    s.insert_collection(
        "h",
        &request("c-4"),
        CollectionStatus::Running,
        CollectionOrigin::Live,
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    s.insert_collection(
        "g",
        &request("g-1"),
        CollectionStatus::Queued,
        CollectionOrigin::Live,
    )
    .unwrap();
    let both = ["h".to_string(), "g".to_string(), "\0odd".to_string()];
    let hosts_of = |v: Vec<(String, String)>| v.into_iter().map(|(h, _)| h).collect::<Vec<_>>();
    assert_eq!(hosts_of(s.queued_hosts(&both, 2, 10).unwrap()), ["h", "g"]);
    assert_eq!(hosts_of(s.queued_hosts(&both, 2, 1).unwrap()), ["h"]);
    // h runs one already: with one allowed per host, only g has room.
    assert_eq!(hosts_of(s.queued_hosts(&both, 1, 10).unwrap()), ["g"]);
    assert!(s.queued_hosts(&both, 2, 0).unwrap().is_empty());
    assert!(s.queued_hosts(&[], 2, 10).unwrap().is_empty());
    // Only what is still `requested` becomes queued; a running one stays running.
    s.mark_queued(&["c-1".into(), "c-4".into(), "none".into()])
        .unwrap();
    s.mark_queued(&[]).unwrap();
    assert_eq!(
        s.get_collection("c-1").unwrap().unwrap().status,
        CollectionStatus::Queued
    );
    assert_eq!(
        s.get_collection("c-4").unwrap().unwrap().status,
        CollectionStatus::Running
    );
    assert!(s.hosts_with_requested(&both).unwrap().is_empty());
}

fn items_count_chunks_and_duplicates(s: &dyn MetadataStore, _: Backend) {
    s.insert_enrolled_host("h", "web", "c").unwrap();
    s.insert_collection(
        "h",
        &request("c"),
        CollectionStatus::Running,
        CollectionOrigin::Live,
    )
    .unwrap();
    let h = header("item-1", "c");
    assert!(s.insert_item(&h).unwrap());
    assert!(!s.insert_item(&h).unwrap());
    assert!(s
        .record_chunk("item-1", 1, "b1", 4, Codec::Zstd, 2)
        .unwrap());
    assert!(s
        .record_chunk("item-1", 0, "b0", 4, Codec::None, 4)
        .unwrap());
    assert!(!s
        .record_chunk("item-1", 0, "b0", 4, Codec::None, 4)
        .unwrap());
    let chunks = s.item_chunks("item-1").unwrap();
    assert_eq!(chunks.iter().map(|c| c.index).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(chunks[1].sha256, "b1");
    assert_eq!(s.blob_codec("b1").unwrap(), Some((Codec::Zstd, 2)));
    assert_eq!(s.blob_codec("none").unwrap(), None);
    let i = s.get_item("item-1").unwrap().unwrap();
    assert_eq!((i.chunks_received, i.duplicate_chunks), (2, 1));
    assert_eq!(i.status, ItemStatus::Receiving);
    assert_eq!(i.kind, "file");
    assert_eq!(i.header.unwrap(), h);
    s.seal_item(&manifest(&h, 8, 2)).unwrap();
    let i = s.get_item("item-1").unwrap().unwrap();
    assert_eq!(i.status, ItemStatus::Sealed);
    assert_eq!((i.raw_len, i.chunk_count), (Some(8), Some(2)));
    assert_eq!(i.manifest.unwrap().raw_len, 8);
    assert!(!s.fail_item("item-1", "late").unwrap());
    s.insert_item(&header("item-2", "c")).unwrap();
    assert!(s.fail_item("item-2", "agent restarted").unwrap());
    s.reject_item("item-2", "hash mismatch", None).unwrap();
    let i = s.get_item("item-2").unwrap().unwrap();
    assert_eq!(i.status, ItemStatus::Rejected);
    assert_eq!(i.error.as_deref(), Some("hash mismatch"));
    assert_eq!(s.items_of_collection("c").unwrap().len(), 2);
    assert_eq!(s.item_ids_with_prefix("item-", 1).unwrap(), ["item-1"]);
}

fn custody_appends_once_per_seq_and_reads_back_exactly(s: &dyn MetadataStore, _: Backend) {
    assert_eq!(s.custody_tail("c").unwrap(), None);
    // Keys in an order no JSON normaliser keeps, and text that must survive as written.
    let details = serde_json::json!({"z": 1, "a": "é\"\\\u{1}", "m": [1.5, null, {"y": true}]});
    s.insert_custody(&record("c", 0, details.clone())).unwrap();
    s.insert_custody(&record("c", 1, serde_json::json!({})))
        .unwrap();
    assert!(matches!(
        s.insert_custody(&record("c", 1, serde_json::json!({"again": 1}))),
        Err(StorageError::Conflict(m)) if m.contains("custody record 1")
    ));
    s.insert_custody(&record("d", 0, serde_json::json!(null)))
        .unwrap();
    let recs = s.custody_records("c").unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0], record("c", 0, details.clone()));
    // The bytes the hash covers are the bytes written.
    assert_eq!(
        serde_json::to_string(&recs[0].details).unwrap(),
        serde_json::to_string(&details).unwrap()
    );
    assert_eq!(
        s.custody_tail("c").unwrap(),
        Some((1, format!("{:064}", 1)))
    );
    let tails = s.custody_tails().unwrap();
    assert_eq!(
        tails
            .iter()
            .map(|t| (t.0.as_str(), t.1))
            .collect::<Vec<_>>(),
        [("c", 1), ("d", 0)]
    );
}

fn live_events_are_found_by_host_time_and_kind(s: &dyn MetadataStore, _: Backend) {
    let ev = |t: i64, kind: &str| LiveEvent {
        time_ns: t,
        kind: kind.into(),
        pid: Some(7),
        comm: Some("sh".into()),
        json: format!(r#"{{"t":{t},"kind":"{kind}"}}"#),
        ..Default::default()
    };
    let mut tl = crate::storage::timeline::Event::new(10, "ebpf", "process_exec", "sh");
    tl.dedup = 1;
    let n = s
        .insert_live_events(
            "h",
            &[ev(30, "exec"), ev(10, "exec"), ev(20, "connect")],
            &[tl],
        )
        .unwrap();
    assert_eq!(n, 3);
    s.insert_live_events("other", &[ev(15, "exec")], &[])
        .unwrap();
    let all = s.query_events("h", 0, 100, None, 10).unwrap();
    let times: Vec<i64> = all.iter().map(|v| v["t"].as_i64().unwrap()).collect();
    assert_eq!(times, [10, 20, 30]);
    assert_eq!(
        s.query_events("h", 0, 100, Some("exec"), 10).unwrap().len(),
        2
    );
    assert_eq!(s.query_events("h", 15, 25, None, 10).unwrap().len(), 1);
    assert_eq!(s.query_events("h", 0, 100, None, 1).unwrap().len(), 1);
    let f = crate::storage::timeline::Filter::default();
    let (rows, _) = s.timeline_page(&f, None, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].host_id, "h");
}

fn readiness_keeps_a_history_and_a_verdict(s: &dyn MetadataStore, _: Backend) {
    s.insert_enrolled_host("h", "web", "c").unwrap();
    assert_eq!(
        s.insert_readiness("h", &report(CheckStatus::Pass, "t1"))
            .unwrap(),
        None
    );
    let since = s.get_host("h").unwrap().unwrap().readiness_since;
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert_eq!(
        s.insert_readiness("h", &report(CheckStatus::Pass, "t2"))
            .unwrap(),
        Some(CheckStatus::Pass)
    );
    // The same verdict keeps its start.
    assert_eq!(s.get_host("h").unwrap().unwrap().readiness_since, since);
    std::thread::sleep(std::time::Duration::from_millis(2));
    s.insert_readiness("h", &report(CheckStatus::Fail, "t3"))
        .unwrap();
    let host = s.get_host("h").unwrap().unwrap();
    assert_eq!(host.readiness.as_deref(), Some("fail"));
    assert_ne!(host.readiness_since, since);
    let hist = s.readiness_history("h", 10).unwrap();
    let started: Vec<&str> = hist
        .iter()
        .map(|r| r["started"].as_str().unwrap())
        .collect();
    assert_eq!(started, ["t3", "t2", "t1"]);
    let changed: Vec<bool> = hist
        .iter()
        .map(|r| r["changed"].as_bool().unwrap())
        .collect();
    assert_eq!(changed, [true, false, false]);
    assert_eq!(hist[0]["failed"], 1);
    assert_eq!(hist[0]["checks"][0]["id"], "kernel");
    let fleet = s.fleet_readiness(7).unwrap();
    assert_eq!(fleet.len(), 1);
    assert_eq!(
        (fleet[0]["fail"].clone(), fleet[0]["pass"].clone()),
        (1.into(), 0.into())
    );
}
