//! What only the PostgreSQL back end has: several processes on one database, calls from
//! inside tokio, a server that restarts under the collector, and the copy of a SQLite database.

use super::records::{containment_row, header, ident, record, report, request};
use super::timeline::with_events;
use super::{fresh_database, sqlite};
use crate::storage::cases::{Note, Target};
use crate::storage::postgres::Postgres;
use crate::storage::timeline::Filter;
use crate::storage::{
    CaseStore, CollectionOrigin, CollectionStatus, CollectionStore, ConsoleStore, CustodyStore,
    HostStore, ItemStore, LiveEvent, MetadataStore, Role, SequenceRow, StorageError, TimelineStore,
    TokenStore,
};
use cairn_harness::TempPostgres;
use cairn_protocol::chunk::Codec;
use cairn_protocol::readiness::CheckStatus;
use std::sync::{Arc, Barrier};

#[test]
fn two_collectors_append_the_same_custody_record_and_one_wins() {
    let url = fresh_database();
    // Both start at once: the schema is made once, under the advisory lock.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Postgres::connect(&url).unwrap());
        let b = s.spawn(|| Postgres::connect(&url).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    let stores = [Arc::new(a), Arc::new(b)];
    for round in 0..20 {
        let coll = format!("c-{round}");
        let barrier = Arc::new(Barrier::new(2));
        let results: Vec<Result<(), StorageError>> = std::thread::scope(|s| {
            let handles: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(i, store)| {
                    let (store, barrier, coll) =
                        (Arc::clone(store), Arc::clone(&barrier), coll.clone());
                    s.spawn(move || {
                        let mut r = record(&coll, 0, serde_json::json!({"by": i}));
                        r.actor = format!("collector-{i}");
                        barrier.wait();
                        store.insert_custody(&r)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won = results.iter().filter(|r| r.is_ok()).count();
        let lost = results
            .iter()
            .filter(|r| matches!(r, Err(StorageError::Conflict(_))))
            .count();
        assert_eq!((won, lost), (1, 1), "round {round}: {results:?}");
        assert_eq!(stores[0].custody_records(&coll).unwrap().len(), 1);
    }
    // The same timeline batch from both at once (a new host too): each event is new once.
    let evs: Vec<crate::storage::timeline::Event> = (0..5_000i64)
        .map(|i| {
            let mut e =
                crate::storage::timeline::Event::new(i / 3, "journal", "log", format!("l{i}"));
            e.dedup = i;
            e
        })
        .collect();
    let barrier = Barrier::new(2);
    let new: usize = std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .iter()
            .map(|store| {
                let (evs, barrier) = (&evs, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    store.insert_timeline("new-host", None, evs).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(new, 5_000);
    let f = Filter {
        host_ids: vec!["new-host".into()],
        ..Default::default()
    };
    assert_eq!(stores[1].timeline_facets(&f).unwrap().total, 5_000);
    // Chunks and items: the unique keys decide, not the process.
    stores[0].insert_enrolled_host("h", "web", "c").unwrap();
    stores[0]
        .insert_collection(
            "h",
            &request("c"),
            CollectionStatus::Running,
            CollectionOrigin::Live,
        )
        .unwrap();
    assert!(stores[0].insert_item(&header("i", "c")).unwrap());
    assert!(!stores[1].insert_item(&header("i", "c")).unwrap());
    assert!(stores[1]
        .record_chunk("i", 0, "s", 4, Codec::None, 4)
        .unwrap());
    assert!(!stores[0]
        .record_chunk("i", 0, "s", 4, Codec::None, 4)
        .unwrap());
    match stores[1].insert_enrolled_host("h", "web", "other") {
        Err(e @ StorageError::Conflict(_)) => {
            assert_eq!(e.to_string(), "a row of hosts: Key (id)=(h) already exists")
        }
        r => panic!("{r:?}"),
    }
}

fn some_calls(s: &Postgres, n: usize) {
    s.insert_enrolled_host(&format!("h{n}"), "web", &format!("c{n}"))
        .unwrap();
    assert_eq!(
        s.get_host(&format!("h{n}")).unwrap().unwrap().hostname,
        "web"
    );
    let mut e = crate::storage::timeline::Event::new(1, "ebpf", "exec", "sh");
    e.dedup = n as i64;
    assert_eq!(s.insert_timeline("h", None, &[e]).unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_tokio_workers_and_blocking_threads_do_not_panic() {
    let url = tokio::task::spawn_blocking(fresh_database).await.unwrap();
    // Even connecting happens on the pool's own threads.
    let s = Arc::new(Postgres::connect(&url).unwrap());
    some_calls(&s, 0);
    let mut tasks = Vec::new();
    for n in 1..20 {
        let s = Arc::clone(&s);
        if n % 2 == 0 {
            tasks.push(tokio::task::spawn_blocking(move || some_calls(&s, n)));
        } else {
            tasks.push(tokio::spawn(async move { some_calls(&s, n) }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.list_hosts().unwrap().len(), 20);
}

#[tokio::test(flavor = "current_thread")]
async fn calls_from_a_current_thread_runtime_do_not_panic() {
    let url = tokio::task::spawn_blocking(fresh_database).await.unwrap();
    let s = Postgres::connect(&url).unwrap();
    some_calls(&s, 0);
    assert_eq!(s.list_hosts().unwrap().len(), 1);
}

#[test]
fn a_restarted_server_costs_at_most_one_call() {
    // A server of its own: the other tests' must not restart.
    let pg = TempPostgres::start().unwrap();
    let s = Postgres::connect(&pg.url()).unwrap();
    // Every connection of the pool in use, so that each one sees the restart.
    std::thread::scope(|scope| {
        for n in 0..8 {
            let s = &s;
            scope.spawn(move || some_calls(s, n));
        }
    });
    pg.restart().unwrap();
    let mut failed = 0;
    for n in 100..120 {
        match s.get_host("h1") {
            Ok(h) => assert!(h.is_some()),
            Err(e) => {
                failed += 1;
                eprintln!("call {n} after the restart: {e}");
            }
        }
    }
    assert!(
        failed <= crate::storage::postgres::POOL_SIZE,
        "{failed} calls failed"
    );
    // Idle connections are checked before use: after a pause, none fails.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    pg.restart().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    for _ in 0..10 {
        assert!(s.get_host("h1").unwrap().is_some());
    }
    some_calls(&s, 200);
}

/// A SQLite store with something in every table; the secrets it made (API token, console
/// session, sign-in link).
fn populate(s: &dyn MetadataStore) -> [String; 3] {
    let secret = s.create_api_token("alice", Role::Admin).unwrap();
    s.create_enroll_token(3, 3600, "fleet").unwrap();
    s.insert_enrolled_host("h", "web-1", "fp").unwrap();
    s.update_host_identity("h", &ident("web-1", Some("m1"), Some("i-1")), "0.1.0")
        .unwrap();
    s.upsert_import_host(&ident("laptop", None, None)).unwrap();
    s.insert_readiness("h", &report(CheckStatus::Warn, "t1"))
        .unwrap();
    s.insert_readiness("h", &report(CheckStatus::Pass, "t2"))
        .unwrap();
    for id in ["c-1", "c-2"] {
        s.insert_collection(
            "h",
            &request(id),
            CollectionStatus::Running,
            CollectionOrigin::Live,
        )
        .unwrap();
        s.insert_custody(&record(id, 0, serde_json::json!({"z": 1, "a": [id]})))
            .unwrap();
        s.insert_custody(&record(id, 1, serde_json::json!({})))
            .unwrap();
    }
    s.set_collection_status("c-1", CollectionStatus::Sealed, Some(&["e".into()]))
        .unwrap();
    s.insert_item(&header("i-1", "c-1")).unwrap();
    s.record_chunk("i-1", 0, "s0", 4, Codec::Zstd, 3).unwrap();
    s.record_chunk("i-1", 1, "s1", 2, Codec::None, 2).unwrap();
    s.record_chunk("i-1", 1, "s1", 2, Codec::None, 2).unwrap();
    s.insert_live_events(
        "h",
        &[LiveEvent {
            time_ns: 5,
            kind: "exec".into(),
            pid: Some(1),
            json: r#"{"kind":"exec"}"#.into(),
            ..Default::default()
        }],
        &[],
    )
    .unwrap();
    with_events(s);
    s.record_timeline_item("i-1", "h", "auth.log", 3, 1, Some("x"))
        .unwrap();
    s.save_search(
        "logins",
        &serde_json::json!({"q": "kind:ssh_login"}),
        "alice",
    )
    .unwrap();
    let (session, _) = s.create_session("alice", Role::Admin, 3600).unwrap();
    let link = s.create_link("bob", Role::Viewer, 3600).unwrap();
    s.annotate(Target::Event, "3", Note::Star, "", "alice")
        .unwrap();
    s.annotate(Target::Event, "3", Note::Comment, "look", "bob")
        .unwrap();
    let c = s.create_case("intrusion", "alice").unwrap();
    s.link_case(c.id, Target::Collection, "c-1", "alice")
        .unwrap();
    s.insert_containment(&containment_row("k-1", "h", "2026-12-02T10:00:00Z"))
        .unwrap();
    s.insert_containment(&containment_row("k-2", "h", "2026-12-02T10:00:00Z"))
        .unwrap();
    s.insert_sequence(&SequenceRow {
        id: "s".into(),
        host_id: "h".into(),
        steps: vec!["isolate".into()],
        next: 0,
        waiting_kind: "collection".into(),
        waiting_id: "c-1".into(),
        status: "running".into(),
        context: serde_json::json!({"rule": "r"}),
        log: vec![],
        created_at: "2026-12-02T10:00:00Z".into(),
        updated_at: "2026-12-02T10:00:00Z".into(),
    })
    .unwrap();
    [secret, session, link]
}

/// Every read of every trait, as text.
fn reads(s: &dyn MetadataStore) -> Vec<String> {
    let all = Filter::default();
    let mut out = vec![
        format!("{:?}", s.list_tokens().unwrap()),
        format!("{:?}", s.list_hosts().unwrap()),
        format!("{:?}", s.list_collections(None, None, 100).unwrap()),
        format!("{:?}", s.get_collection("c-1").unwrap().map(|c| c.request)),
        format!("{:?}", s.items_of_collection("c-1").unwrap()),
        format!("{:?}", s.item_chunks("i-1").unwrap()),
        format!("{:?}", s.blob_codec("s0").unwrap()),
        format!("{:?}", s.custody_records("c-1").unwrap()),
        format!("{:?}", s.custody_tails().unwrap()),
        format!("{:?}", s.query_events("h", 0, 100, None, 10).unwrap()),
        format!("{:?}", s.timeline_page(&all, None, 1000).unwrap()),
        format!("{:?}", s.timeline_facets(&all).unwrap()),
        format!("{:?}", s.timeline_items(None).unwrap()),
        format!("{:?}", s.readiness_history("h", 10).unwrap()),
        format!("{:?}", s.fleet_readiness(3).unwrap()),
        format!("{:?}", s.saved_searches().unwrap()),
        format!("{:?}", s.annotations(Target::Event, "3").unwrap()),
        format!("{:?}", s.cases().unwrap()),
        format!("{:?}", s.containments_of_host("h", 10).unwrap()),
        format!("{:?}", s.pending_containments("h").unwrap()),
        format!("{:?}", s.sequences_of_host("h", 10).unwrap()),
        format!("{:?}", s.running_sequences(10).unwrap()),
        format!("{:?}", s.get_host("h").unwrap()),
        format!("{:?}", s.find_hosts("laptop").unwrap()),
        format!("{:?}", s.pending_requests("h").unwrap()),
        format!("{:?}", s.running_collections(None).unwrap()),
        format!(
            "{:?}",
            s.get_item("i-1").unwrap().map(|i| (i.header, i.manifest))
        ),
        format!("{:?}", s.annotated(Target::Event, Note::Star, 10).unwrap()),
        format!(
            "{:?}",
            s.timeline_stack(&all, crate::storage::timeline::Column::Host, true, 10)
                .unwrap()
        ),
        format!("{:?}", s.timeline_histogram(&all, 1_000, 1_250, 5).unwrap()),
    ];
    for c in s.cases().unwrap() {
        out.push(format!("{:?}", s.case_links(c.id).unwrap()));
    }
    out
}

#[test]
fn a_sqlite_database_is_copied_whole() {
    let lite = sqlite();
    let [secret, session, link] = populate(&*lite.store);
    let path = lite._dir.as_ref().unwrap().path().join("meta.db");
    let pg = Postgres::connect(&fresh_database()).unwrap();
    let copied = pg.copy_from_sqlite(&path).unwrap();
    let n = |t: &str| copied.iter().find(|c| c.0 == t).unwrap().1;
    assert_eq!(
        (n("timeline"), n("custody"), n("hosts"), n("item_chunks")),
        (250, 4, 2, 2)
    );
    assert_eq!(copied.len(), 21);
    let (a, b) = (reads(&*lite.store), reads(&pg));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    // The secrets still work (stored hashed, copied as they were); new rows follow the copied ids.
    assert_eq!(
        pg.check_api_token(&secret).unwrap(),
        Some(("alice".into(), Role::Admin))
    );
    assert_eq!(pg.session(&session).unwrap().unwrap().name, "alice");
    assert_eq!(
        pg.use_link(&link).unwrap(),
        Some(("bob".into(), Role::Viewer))
    );
    let next = pg.create_case("next", "bob").unwrap();
    assert_eq!(next.id, lite.store.create_case("next", "bob").unwrap().id);
    let mut e = crate::storage::timeline::Event::new(9, "s", "k", "m");
    e.dedup = 9;
    pg.insert_timeline("h", None, &[e.clone()]).unwrap();
    lite.store.insert_timeline("h", None, &[e]).unwrap();
    let last =
        |s: &dyn MetadataStore| s.timeline_page(&Filter::default(), None, 1).unwrap().0[0].id;
    assert_eq!(last(&pg), last(&*lite.store));
    // Never into a database that has something.
    let err = pg.copy_from_sqlite(&path).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[test]
fn an_older_sqlite_database_without_the_newer_columns_is_copied() {
    let lite = sqlite();
    lite.store.insert_enrolled_host("h", "web", "fp").unwrap();
    let mut e = crate::storage::timeline::Event::new(1, "s", "k", "m");
    e.dedup = 1;
    lite.store.insert_timeline("h", None, &[e]).unwrap();
    let path = lite._dir.as_ref().unwrap().path().join("meta.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "ALTER TABLE timeline DROP COLUMN time_source; ALTER TABLE hosts DROP COLUMN retired_reason;
         DROP TABLE trigger_sequences;",
    )
    .unwrap();
    drop(conn);
    let pg = Postgres::connect(&fresh_database()).unwrap();
    let copied = pg.copy_from_sqlite(&path).unwrap();
    assert!(copied.contains(&("trigger_sequences".to_string(), 0)));
    assert_eq!(pg.get_host("h").unwrap().unwrap().retired_reason, None);
    assert_eq!(
        pg.timeline_page(&Filter::default(), None, 5)
            .unwrap()
            .0
            .len(),
        1
    );
}

#[test]
fn a_signed_record_with_a_nul_is_not_copied_altered_and_nothing_is_copied() {
    let lite = sqlite();
    lite.store.insert_enrolled_host("h", "web", "fp").unwrap();
    let mut r = record("c", 0, serde_json::json!({}));
    r.actor = "api:a\0b".into();
    lite.store.insert_custody(&r).unwrap();
    let path = lite._dir.as_ref().unwrap().path().join("meta.db");
    let pg = Postgres::connect(&fresh_database()).unwrap();
    let err = pg.copy_from_sqlite(&path).unwrap_err().to_string();
    assert!(err.contains("custody") && err.contains("NUL"), "{err}");
    // One transaction: the hosts copied before the custody table are gone with it.
    assert!(pg.list_hosts().unwrap().is_empty());
}

#[test]
fn the_timeline_queries_use_their_indexes() {
    use crate::storage::timeline_sql::{Query, Value, POSTGRES};
    let url = fresh_database();
    let pg = Postgres::connect(&url).unwrap();
    let evs: Vec<crate::storage::timeline::Event> = (0..50_000i64)
        .map(|i| {
            let mut e = crate::storage::timeline::Event::new(
                i,
                "journal",
                ["a", "b", "c"][(i % 3) as usize],
                format!("line {i}"),
            );
            e.dedup = i;
            e
        })
        .collect();
    // Batches of the two hosts interleave, as agents' do: time follows the heap, hosts do not.
    for (i, batch) in evs.chunks(1_000).enumerate() {
        pg.insert_timeline("h", None, batch).unwrap();
        if i % 5 == 0 {
            pg.insert_timeline("g", None, &batch[..100]).unwrap();
        }
    }
    let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    // Whether the planner can use an index, not whether it prefers one on a small table.
    c.batch_execute("ANALYZE; SET enable_seqscan = off")
        .unwrap();
    let mut plan = |f: &Filter| {
        // As the store builds it: the hosts looked up first.
        let mut q = Query::new(POSTGRES);
        q.hosts = Some(
            c.query("SELECT host_id, n FROM timeline_hosts", &[])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        );
        let sql = q.page(f, None, 50);
        let params: Vec<Box<dyn ::postgres::types::ToSql + Sync>> = q
            .params
            .iter()
            .map(|v| -> Box<dyn ::postgres::types::ToSql + Sync> {
                match v {
                    Value::Int(i) => Box::new(*i),
                    Value::Text(t) => Box::new(t.clone()),
                    Value::Null => Box::new(None::<i64>),
                }
            })
            .collect();
        let refs: Vec<&(dyn ::postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p.as_ref()).collect();
        let rows = c.query(&format!("EXPLAIN {sql}"), &refs).unwrap();
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let text = plan(&Filter {
        text: Some("LINE 4999".into()),
        ..Default::default()
    });
    assert!(text.contains("timeline_message_trgm"), "{text}");
    let host = plan(&Filter {
        host_ids: vec!["g".into()],
        from_ns: Some(10),
        ..Default::default()
    });
    assert!(host.contains("timeline_host_time"), "{host}");
    // A host's hour: the exact `(host, time_ns)` range, never the one-column time index (which
    // the planner prefers for a bare `time_ns` range, filtering the other hosts' rows away).
    let hour = plan(&Filter {
        host_ids: vec!["g".into()],
        from_ns: Some(20_000),
        to_ns: Some(30_000),
        newest_first: true,
        ..Default::default()
    });
    assert!(hour.contains("timeline_host_time"), "{hour}");
    assert!(!hour.contains("timeline_time "), "{hour}");
}

#[test]
fn a_transaction_lost_to_a_deadlock_runs_again() {
    let url = fresh_database();
    let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    c.batch_execute("CREATE TABLE t (n BIGINT)").unwrap();
    let mut attempts = 0;
    let n = crate::storage::postgres::in_transaction(&mut c, |tx| {
        attempts += 1;
        tx.execute("INSERT INTO t VALUES (1)", &[])?;
        if attempts < 3 {
            // What the server says to the loser of a deadlock.
            tx.batch_execute(
                "DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END $$",
            )?;
        }
        Ok(attempts)
    })
    .unwrap();
    assert_eq!(n, 3);
    // Nothing of the failed attempts stayed.
    let rows: i64 = c.query_one("SELECT COUNT(*) FROM t", &[]).unwrap().get(0);
    assert_eq!(rows, 1);
    // Three at most; other errors at once.
    let mut tries = 0;
    let err = crate::storage::postgres::in_transaction(&mut c, |tx| {
        tries += 1;
        tx.batch_execute("DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END $$")?;
        Ok(())
    })
    .unwrap_err();
    assert_eq!(tries, 3);
    assert!(err.to_string().contains("40P01"), "{err}");
    let mut tries = 0;
    let err = crate::storage::postgres::in_transaction(&mut c, |tx| {
        tries += 1;
        tx.batch_execute("SELECT nonsense")?;
        Ok(())
    })
    .unwrap_err();
    assert_eq!(tries, 1);
    assert!(err.to_string().contains("42703"), "{err}");
}
