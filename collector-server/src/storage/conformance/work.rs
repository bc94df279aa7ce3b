//! Saved searches, console sign-ins, cases, containment, trigger sequences, and hostile
//! strings in all of them: the same answers from every back end.

use super::records::{containment_row, record};
use super::{on_both, Backend};
use crate::storage::cases::{Note, Target};
use crate::storage::{ContainmentStatus, MetadataStore, Role, SequenceRow, StorageError};

on_both!(
    saved_searches_are_replaced_renamed_and_deleted,
    console_sessions_and_one_time_links,
    stars_are_one_per_author_and_cases_group_things,
    containment_actions_wait_for_their_host,
    trigger_sequences_run_in_order,
    hostile_strings_are_stored_or_refused_never_a_panic,
);

fn saved_searches_are_replaced_renamed_and_deleted(s: &dyn MetadataStore, _: Backend) {
    let q = serde_json::json!({"q": "kind:ssh_login", "n": 1});
    s.save_search("b", &q, "alice").unwrap();
    s.save_search("b", &serde_json::json!({"q": "x"}), "bob")
        .unwrap();
    s.save_search("a", &q, "alice").unwrap();
    assert_eq!(s.saved_search("b").unwrap().unwrap()["q"], "x");
    let all = s.saved_searches().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["name"], "a");
    assert_eq!(all[1]["created_by"], "bob");
    assert!(matches!(
        s.rename_saved_search("a", "b"),
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        s.rename_saved_search("missing", "b"),
        Err(StorageError::Conflict(_))
    ));
    assert!(s.rename_saved_search("a", "a").unwrap());
    assert!(s.rename_saved_search("a", "c").unwrap());
    assert!(!s.rename_saved_search("a", "d").unwrap());
    assert_eq!(s.saved_search("c").unwrap().unwrap(), q);
    assert!(s.delete_saved_search("c").unwrap());
    assert!(!s.delete_saved_search("c").unwrap());
    assert!(s.saved_search("c").unwrap().is_none());
}

fn console_sessions_and_one_time_links(s: &dyn MetadataStore, _: Backend) {
    let (secret, session) = s.create_session("alice", Role::Admin, 3600).unwrap();
    let found = s.session(&secret).unwrap().unwrap();
    assert_eq!(
        (found.name.as_str(), found.role, found.csrf.as_str()),
        ("alice", Role::Admin, session.csrf.as_str())
    );
    assert!(s.session("cairn_s_other").unwrap().is_none());
    let (old, _) = s.create_session("bob", Role::Viewer, -1).unwrap();
    assert!(s.session(&old).unwrap().is_none());
    s.end_session(&secret).unwrap();
    assert!(s.session(&secret).unwrap().is_none());
    let code = s.create_link("carol", Role::Analyst, 60).unwrap();
    assert_eq!(
        s.use_link(&code).unwrap(),
        Some(("carol".into(), Role::Analyst))
    );
    assert_eq!(s.use_link(&code).unwrap(), None);
    let expired = s.create_link("dave", Role::Analyst, -1).unwrap();
    assert_eq!(s.use_link(&expired).unwrap(), None);
}

fn stars_are_one_per_author_and_cases_group_things(db: &dyn MetadataStore, _: Backend) {
    db.annotate(Target::Event, "42", Note::Star, "", "alice")
        .unwrap();
    db.annotate(Target::Event, "42", Note::Star, "", "alice")
        .unwrap();
    db.annotate(Target::Event, "42", Note::Star, "", "bob")
        .unwrap();
    db.annotate(
        Target::Event,
        "42",
        Note::Comment,
        "<b>curl | sh</b>",
        "bob",
    )
    .unwrap();
    let notes = db.annotations(Target::Event, "42").unwrap();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert_eq!(notes[2].text, "<b>curl | sh</b>");
    db.unstar(Target::Event, "42", "alice").unwrap();
    assert_eq!(db.annotations(Target::Event, "42").unwrap().len(), 2);
    db.annotate(Target::Event, "7", Note::Star, "", "bob")
        .unwrap();
    assert_eq!(
        db.annotated(Target::Event, Note::Star, 10).unwrap(),
        vec!["7".to_string(), "42".to_string()]
    );
    let c = db.create_case("web-1 intrusion", "alice").unwrap();
    let d = db.create_case("second", "bob").unwrap();
    assert!(d.id > c.id);
    db.link_case(c.id, Target::Event, "42", "bob").unwrap();
    db.link_case(c.id, Target::Event, "42", "bob").unwrap();
    db.link_case(c.id, Target::Collection, "abc", "bob")
        .unwrap();
    assert_eq!(db.case_links(c.id).unwrap().len(), 2);
    assert!(db.set_case_status(c.id, "closed").unwrap());
    assert!(!db.set_case_status(d.id + 1, "closed").unwrap());
    assert_eq!(db.case(c.id).unwrap().unwrap().status, "closed");
    // Open cases first, newest first.
    let ids: Vec<i64> = db.cases().unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, [d.id, c.id]);
    db.unlink_case(c.id, Target::Event, "42").unwrap();
    assert_eq!(db.case_links(c.id).unwrap().len(), 1);
    assert!(db.case(d.id + 1).unwrap().is_none());
}

fn containment_actions_wait_for_their_host(s: &dyn MetadataStore, _: Backend) {
    let at = "2026-12-02T10:00:00Z";
    s.insert_containment(&containment_row("a", "h", at))
        .unwrap();
    s.insert_containment(&containment_row("b", "h", at))
        .unwrap();
    s.insert_containment(&containment_row("c", "other", at))
        .unwrap();
    assert!(matches!(
        s.insert_containment(&containment_row("a", "h", at)),
        Err(StorageError::Conflict(_))
    ));
    // The same time: the order they were written.
    let pending: Vec<String> = s
        .pending_containments("h")
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(pending, ["a", "b"]);
    let mut due = s
        .hosts_with_pending_containment(&["h".into(), "other".into(), "none".into()])
        .unwrap();
    due.sort();
    assert_eq!(due, ["h", "other"]);
    let newest: Vec<String> = s
        .containments_of_host("h", 10)
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(newest, ["b", "a"]);
    let outcome: cairn_protocol::containment::Outcome = serde_json::from_value(serde_json::json!({
        "id": "a", "action": "isolate", "target": {"kind": "host"}, "ok": true,
        "mechanism": "nftables table inet cairn_isolation", "verified_rtt_ms": 1.5,
        "at": "2026-12-02T10:00:01Z"
    }))
    .unwrap();
    assert!(s
        .set_containment_status("a", ContainmentStatus::Done, Some(&outcome))
        .unwrap());
    assert!(!s
        .set_containment_status("zz", ContainmentStatus::Done, None)
        .unwrap());
    let a = s.containment("a").unwrap().unwrap();
    assert_eq!(a.status, ContainmentStatus::Done);
    assert_eq!(a.outcome, Some(outcome));
    assert_eq!(a.request.reason, "r-a");
    assert_eq!(s.pending_containments("h").unwrap().len(), 1);
    assert!(s.containment("zz").unwrap().is_none());
}

fn trigger_sequences_run_in_order(s: &dyn MetadataStore, _: Backend) {
    let seq = |id: &str, at: &str| SequenceRow {
        id: id.into(),
        host_id: "h".into(),
        steps: vec!["isolate".into(), "collect memory".into()],
        next: 0,
        waiting_kind: "collection".into(),
        waiting_id: format!("c-{id}"),
        status: "running".into(),
        context: serde_json::json!({"rule": "r1", "pid": 7}),
        log: vec![],
        created_at: at.into(),
        updated_at: at.into(),
    };
    s.insert_sequence(&seq("s2", "2026-12-02T10:00:02Z"))
        .unwrap();
    s.insert_sequence(&seq("s1", "2026-12-02T10:00:01Z"))
        .unwrap();
    let running: Vec<String> = s
        .running_sequences(10)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(running, ["s1", "s2"]);
    let mut done = seq("s1", "2026-12-02T10:00:01Z");
    done.next = 2;
    done.status = "done".into();
    done.log = vec!["isolated".into()];
    s.update_sequence(&done).unwrap();
    assert_eq!(s.running_sequences(10).unwrap().len(), 1);
    let of_host = s.sequences_of_host("h", 10).unwrap();
    assert_eq!(of_host[0].id, "s2");
    assert_eq!(of_host[1].log, ["isolated"]);
    assert_eq!(of_host[1].next, 2);
    assert_eq!(of_host[1].context["pid"], 7);
}

/// Evidence strings come from attackers: quotes, LIKE's metacharacters, invalid-looking
/// JSON, long text, and U+0000, which SQLite stores and PostgreSQL's text cannot hold
/// (stored as U+FFFD there; a signed custody record with one is refused, never altered).
fn hostile_strings_are_stored_or_refused_never_a_panic(s: &dyn MetadataStore, b: Backend) {
    let nul = "web\0-1'; DROP TABLE hosts; --%_\\";
    let stored = match b {
        Backend::Sqlite => nul.to_string(),
        Backend::Postgres => nul.replace('\0', "\u{fffd}"),
    };
    s.insert_enrolled_host("h\0", nul, "fp\0").unwrap();
    let h = s.get_host("h\0").unwrap().unwrap();
    assert_eq!(h.hostname, stored);
    assert_eq!(
        s.host_id_by_cert("fp\0").unwrap().as_deref(),
        Some(h.id.as_str())
    );
    assert_eq!(s.find_hosts(nul).unwrap().len(), 1);
    let long = "x".repeat(1 << 20);
    let mut e = crate::storage::timeline::Event::new(1, "auth.log", "ssh_login", nul);
    e.user = Some("root\0".into());
    e.attrs.insert("k\0".into(), serde_json::json!("v\0"));
    let mut e2 = crate::storage::timeline::Event::new(2, "auth.log", "ssh_login", long.clone());
    e2.dedup = 1;
    assert_eq!(
        s.insert_timeline("h\0", Some("item\0"), &[e, e2]).unwrap(),
        2
    );
    let text = |t: &str| crate::storage::timeline::Filter {
        text: Some(t.into()),
        ..Default::default()
    };
    let (rows, _) = s.timeline_page(&text("WEB"), None, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.message, stored);
    // SQLite's LIKE reads text as ending at a NUL: what follows one is not found by free
    // text there. PostgreSQL (a U+FFFD in its place) finds it.
    let after_nul = s.timeline_page(&text("drop table"), None, 10).unwrap().0;
    assert_eq!(after_nul.len(), usize::from(b == Backend::Postgres));
    // JSON keeps its own escape: the attributes come back whole.
    assert_eq!(rows[0].event.attrs["k\0"], "v\0");
    let (rows, _) = s
        .timeline_page(&crate::storage::timeline::Filter::default(), None, 10)
        .unwrap();
    assert_eq!(rows[1].event.message, long);
    let rec = record(
        "c",
        0,
        serde_json::json!({"note": "nul \0 in json is escaped"}),
    );
    s.insert_custody(&rec).unwrap();
    assert_eq!(s.custody_records("c").unwrap()[0], rec);
    let mut bad = record("c", 1, serde_json::json!({}));
    bad.actor = "api:evil\0".into();
    match (b, s.insert_custody(&bad)) {
        (Backend::Sqlite, r) => r.unwrap(),
        (Backend::Postgres, Err(StorageError::Backend { source, .. })) => {
            assert!(source.to_string().contains("NUL"), "{source}")
        }
        (Backend::Postgres, r) => panic!("a NUL in a signed record must be refused: {r:?}"),
    }
    s.save_search("q\0", &serde_json::json!({"q": "\0"}), "a\0")
        .unwrap();
    assert_eq!(s.saved_searches().unwrap().len(), 1);
}
