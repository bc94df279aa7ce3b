//! The timeline on every back end: dedup and the count of new rows, the query language,
//! facets, values, histograms, stacking, context, spans and paging.

use super::{on_both, Backend};
use crate::storage::timeline::{Column, Cond, Cursor, Event, Filter, Match, FACET_TOP};
use crate::storage::MetadataStore;
use serde_json::Value;

on_both!(
    histograms_count_every_matching_event_in_its_bucket,
    pages_follow_the_cursor_in_time_order,
    filters_and_facets_agree,
    inferred_times_are_stored_and_shown,
    the_query_language_means_the_same,
    values_stacks_context_and_spans,
    a_batch_is_deduplicated_and_counted,
    a_hundred_thousand_events_in_one_batch,
    host_values_are_the_distinct_pairs_of_each_host,
);

/// 250 events on two hosts; inserting them again changes nothing.
pub(super) fn with_events(db: &dyn MetadataStore) -> Vec<Event> {
    let mut evs = Vec::new();
    for i in 0..250i64 {
        let mut e = Event::new(
            1_000 + i,
            if i % 2 == 0 { "ebpf" } else { "auth.log" },
            if i % 5 == 0 {
                "ssh_login"
            } else {
                "process_exec"
            },
            format!("event {i} 100%_done"),
        );
        e.user = Some(if i % 3 == 0 { "root" } else { "alice" }.into());
        e.container = (i % 10 == 0).then(|| "4c01db0b339cabcdef".to_string());
        e.pid = Some(100 + i % 7);
        e.exe = Some(format!("/usr/bin/t{}", i % 4));
        e.dst_port = (i % 25 == 0).then_some(22);
        e.argv = Some(vec!["t".into(), i.to_string()]);
        e.dedup = i;
        if i % 50 == 0 {
            e = e.attr("uid", i.to_string());
        }
        evs.push(e);
    }
    assert_eq!(
        db.insert_timeline("host-a", Some("item-1"), &evs[..200])
            .unwrap(),
        200
    );
    assert_eq!(db.insert_timeline("host-b", None, &evs[200..]).unwrap(), 50);
    assert_eq!(db.insert_timeline("host-a", None, &evs[..200]).unwrap(), 0);
    evs
}

fn histograms_count_every_matching_event_in_its_bucket(db: &dyn MetadataStore, _: Backend) {
    with_events(db);
    let all = Filter::default();
    let h = db.timeline_histogram(&all, 1_000, 1_250, 10).unwrap();
    assert_eq!(h.bucket_ns, 25);
    assert_eq!(h.counts, vec![25; 10]);
    // Another condition: the same buckets, only what matches (every fifth is a login).
    let logins = Filter {
        kinds: vec!["ssh_login".into()],
        ..Filter::default()
    };
    let h = db.timeline_histogram(&logins, 1_000, 1_250, 10).unwrap();
    assert_eq!(h.counts, vec![5; 10]);
    // A narrower range than the histogram's: nothing outside it is counted.
    let late = Filter {
        from_ns: Some(1_200),
        ..Filter::default()
    };
    let h = db.timeline_histogram(&late, 1_000, 1_250, 10).unwrap();
    assert_eq!(h.counts.iter().sum::<u64>(), 50);
    assert_eq!(&h.counts[8..], &[25, 25]);
    // The last bucket takes the remainder; nothing before `from` or after `to`.
    let h = db.timeline_histogram(&all, 1_010, 1_249, 7).unwrap();
    assert_eq!(h.bucket_ns, 34);
    assert_eq!(h.counts, [34, 34, 34, 34, 34, 34, 36]);
    let h = db.timeline_histogram(&all, 2_000, 1_000, 3).unwrap();
    assert_eq!(h.counts, [0, 0, 0]);
}

fn pages_follow_the_cursor_in_time_order(db: &dyn MetadataStore, _: Backend) {
    with_events(db);
    for newest_first in [false, true] {
        let f = Filter {
            newest_first,
            ..Filter::default()
        };
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (rows, next) = db.timeline_page(&f, cursor, 64).unwrap();
            seen.extend(rows.iter().map(|r| r.event.time_ns));
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 250);
        if newest_first {
            assert!(seen.windows(2).all(|w| w[0] > w[1]));
        } else {
            assert!(seen.windows(2).all(|w| w[0] < w[1]));
        }
    }
    // By host and time (on PostgreSQL, `(host, time_ns)` row comparisons with the cursor
    // folded in): the same rows, in order, page after page.
    let hosts = |h: &[&str]| h.iter().map(|h| h.to_string()).collect::<Vec<_>>();
    for (host_ids, from_ns, to_ns, want) in [
        (hosts(&["host-a"]), Some(1_050), Some(1_150), 101),
        (hosts(&["host-a", "host-b"]), Some(1_190), Some(1_210), 21),
        (hosts(&["host-b"]), None, None, 50),
        (hosts(&["host-b", "nowhere"]), None, Some(1_204), 5),
        (hosts(&["nowhere"]), Some(0), None, 0),
    ] {
        for newest_first in [false, true] {
            let f = Filter {
                host_ids: host_ids.clone(),
                from_ns,
                to_ns,
                newest_first,
                ..Filter::default()
            };
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let (rows, next) = db.timeline_page(&f, cursor, 8).unwrap();
                seen.extend(rows.iter().map(|r| r.event.time_ns));
                match next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(seen.len(), want, "{host_ids:?} {from_ns:?} {to_ns:?}");
            assert!(seen.windows(2).all(|w| if newest_first {
                w[0] > w[1]
            } else {
                w[0] < w[1]
            }));
            assert_eq!(db.timeline_facets(&f).unwrap().total, want as u64);
        }
    }
    // Exactly a page: no next.
    let (rows, next) = db.timeline_page(&Filter::default(), None, 250).unwrap();
    assert_eq!((rows.len(), next), (250, None));
    assert_eq!(
        Cursor::decode(&Cursor { time_ns: 5, id: 7 }.encode()),
        Some(Cursor { time_ns: 5, id: 7 })
    );
}

fn filters_and_facets_agree(db: &dyn MetadataStore, _: Backend) {
    with_events(db);
    let f = Filter {
        host_ids: vec!["host-a".into()],
        kinds: vec!["ssh_login".into()],
        ..Default::default()
    };
    let (rows, _) = db.timeline_page(&f, None, 1000).unwrap();
    assert_eq!(rows.len(), 40);
    let fc = db.timeline_facets(&f).unwrap();
    assert_eq!(fc.total, 40);
    assert!(fc.exact);
    assert_eq!(fc.host, vec![("host-a".to_string(), 40)]);
    let root = fc.user.iter().find(|(u, _)| u == "root").unwrap().1;
    assert_eq!(
        root,
        rows.iter()
            .filter(|r| r.event.user.as_deref() == Some("root"))
            .count() as u64
    );
    // Container prefix (Falco's 12 characters) and free text with LIKE metacharacters.
    let f = Filter {
        container: Some("4c01db0b339c".into()),
        text: Some("0 100%_".into()),
        ..Default::default()
    };
    let (rows, _) = db.timeline_page(&f, None, 1000).unwrap();
    assert_eq!(rows.len(), 25);
    let f = Filter {
        text: Some("x%".into()),
        ..Default::default()
    };
    assert!(db.timeline_page(&f, None, 10).unwrap().0.is_empty());
    // Free text ignores case.
    let f = Filter {
        text: Some("EVENT 12 ".into()),
        ..Default::default()
    };
    assert_eq!(db.timeline_page(&f, None, 10).unwrap().0.len(), 1);
    // Every facet over everything: counts, top values, ties by value.
    let fc = db.timeline_facets(&Filter::default()).unwrap();
    assert_eq!(fc.total, 250);
    assert_eq!(
        fc.host,
        [("host-a".to_string(), 200), ("host-b".to_string(), 50)]
    );
    assert_eq!(
        fc.kind,
        [
            ("process_exec".to_string(), 200),
            ("ssh_login".to_string(), 50)
        ]
    );
    assert_eq!(
        fc.source,
        [("auth.log".to_string(), 125), ("ebpf".to_string(), 125)]
    );
    assert_eq!(fc.container, [("4c01db0b339cabcdef".to_string(), 25)]);
    assert_eq!(fc.dst_port, [("22".to_string(), 10)]);
    assert!(fc.exe.len() == 4 && fc.exe.len() <= FACET_TOP);
    assert!(fc.parent.is_empty() && fc.pod.is_empty() && fc.dst.is_empty());
}

fn inferred_times_are_stored_and_shown(db: &dyn MetadataStore, _: Backend) {
    let mut guessed = Event::new(5, "bash_history", "shell_command", "id").inferred("file_mtime");
    guessed.dedup = 1;
    let mut exact = Event::new(6, "bash_history", "shell_command", "ls");
    exact.dedup = 2;
    db.insert_timeline("h", None, &[guessed, exact]).unwrap();
    let (rows, _) = db.timeline_page(&Filter::default(), None, 10).unwrap();
    assert_eq!(rows[0].event.time_source.as_deref(), Some("file_mtime"));
    assert_eq!(rows[1].event.time_source, None);
    // As the API shows them.
    let json: Vec<Value> = rows
        .into_iter()
        .map(|r| serde_json::to_value(crate::timeline::query::Row::from(r)).unwrap())
        .collect();
    assert_eq!(json[0]["time_inferred"], true);
    assert_eq!(json[0]["time_source"], "file_mtime");
    assert_eq!(json[1]["time_inferred"], false);
    assert!(json[1].get("time_source").is_none());
}

fn count(db: &dyn MetadataStore, c: Cond) -> usize {
    let f = Filter {
        cond: Some(c),
        ..Default::default()
    };
    let n = db.timeline_page(&f, None, 1000).unwrap().0.len();
    assert_eq!(db.timeline_facets(&f).unwrap().total, n as u64);
    n
}

fn the_query_language_means_the_same(db: &dyn MetadataStore, _: Backend) {
    with_events(db);
    let is = |c: Column, v: &str| Cond::Is(c, Match::Is(v.into()));
    assert_eq!(count(db, Cond::All(vec![])), 250);
    assert_eq!(count(db, Cond::Any(vec![])), 0);
    assert_eq!(count(db, is(Column::Kind, "ssh_login")), 50);
    assert_eq!(
        count(db, Cond::Not(Box::new(is(Column::Kind, "ssh_login")))),
        200
    );
    // NOT of an unknown (NULL container) is true, as the language means.
    assert_eq!(
        count(db, Cond::Not(Box::new(is(Column::Container, "nope")))),
        250
    );
    assert_eq!(count(db, is(Column::Pid, "100")), 36);
    assert_eq!(count(db, is(Column::Pid, "not a number")), 0);
    assert_eq!(count(db, is(Column::DstPort, "22")), 10);
    assert_eq!(
        count(
            db,
            Cond::Is(Column::Pid, Match::OneOf(vec!["100".into(), "101".into()]))
        ),
        72
    );
    assert_eq!(
        count(
            db,
            Cond::Is(Column::Exe, Match::Prefix("/usr/bin/t".into()))
        ),
        250
    );
    assert_eq!(
        count(db, Cond::Is(Column::Exe, Match::Contains("BIN/T3".into()))),
        62
    );
    // A numeric prefix is a contains on its text, as it always was.
    assert_eq!(
        count(db, Cond::Is(Column::Pid, Match::Prefix("10".into()))),
        250
    );
    assert_eq!(
        count(db, Cond::Is(Column::Host, Match::Is("host-b".into()))),
        50
    );
    assert_eq!(
        count(
            db,
            Cond::Is(
                Column::Host,
                Match::OneOf(vec!["host-a".into(), "host-b".into(), "x".into()])
            )
        ),
        250
    );
    assert_eq!(count(db, is(Column::Item, "item-1")), 200);
    assert_eq!(count(db, is(Column::Message, "event 7 100%_done")), 1);
    // A user is a name or the attributes' uid as text (uid "50" is event 50's).
    assert_eq!(count(db, is(Column::User, "root")), 84);
    assert_eq!(count(db, is(Column::User, "50")), 1);
    assert_eq!(
        count(
            db,
            Cond::Is(
                Column::User,
                Match::OneOf(vec!["alice".into(), "100".into()])
            )
        ),
        166
    );
    let f = Filter {
        user: Some("150".into()),
        ..Default::default()
    };
    assert_eq!(db.timeline_page(&f, None, 10).unwrap().0.len(), 1);
    assert_eq!(
        count(
            db,
            Cond::All(vec![
                is(Column::Source, "ebpf"),
                Cond::Any(vec![is(Column::Kind, "ssh_login"), is(Column::Pid, "101")]),
            ])
        ),
        40
    );
}

fn values_stacks_context_and_spans(db: &dyn MetadataStore, _: Backend) {
    let evs = with_events(db);
    let all = Filter::default();
    let v = db.timeline_values(&all, Column::Exe, 0, 2).unwrap();
    assert_eq!(
        v,
        [
            ("/usr/bin/t0".to_string(), 63),
            ("/usr/bin/t1".to_string(), 63)
        ]
    );
    let v = db.timeline_values(&all, Column::Exe, 2, 10).unwrap();
    assert_eq!(v.len(), 2);
    let v = db.timeline_values(&all, Column::Host, 0, 10).unwrap();
    assert_eq!(v[0], ("host-a".to_string(), 200));
    assert_eq!(
        db.timeline_values(&all, Column::DstPort, 0, 10).unwrap(),
        [("22".to_string(), 10)]
    );
    assert!(db
        .timeline_values(&all, Column::Pod, 0, 10)
        .unwrap()
        .is_empty());
    let rare = db.timeline_stack(&all, Column::Kind, true, 10).unwrap();
    assert_eq!(
        rare.iter()
            .map(|s| (s.value.as_str(), s.events, s.hosts))
            .collect::<Vec<_>>(),
        [("ssh_login", 50, 2), ("process_exec", 200, 2)]
    );
    let common = db
        .timeline_stack(&all, Column::Container, false, 10)
        .unwrap();
    assert_eq!((common[0].events, common[0].hosts), (25, 2));
    let pids = db.timeline_stack(&all, Column::Pid, true, 2).unwrap();
    assert_eq!(pids.len(), 2);
    assert_eq!(db.timeline_span(&all).unwrap(), Some((1_000, 1_249)));
    let none = Filter {
        source: Some("nothing".into()),
        ..Default::default()
    };
    assert_eq!(db.timeline_span(&none).unwrap(), None);
    // Context: the neighbours on the event's own host, in time order.
    let (page, _) = db
        .timeline_page(
            &Filter {
                from_ns: Some(1_100),
                ..Default::default()
            },
            None,
            1,
        )
        .unwrap();
    let anchor = &page[0];
    assert_eq!(anchor.item_id.as_deref(), Some("item-1"));
    assert_eq!(anchor.event, evs[100]);
    assert_eq!(db.timeline_event(anchor.id).unwrap().as_ref(), Some(anchor));
    assert_eq!(db.timeline_event(-1).unwrap(), None);
    let ctx = db.timeline_context(anchor.id, 3).unwrap();
    let times: Vec<i64> = ctx.iter().map(|r| r.event.time_ns).collect();
    assert_eq!(times, [1_097, 1_098, 1_099, 1_100, 1_101, 1_102, 1_103]);
    // At a host's end, fewer on that side.
    let (last_a, _) = db
        .timeline_page(
            &Filter {
                host_ids: vec!["host-a".into()],
                newest_first: true,
                ..Default::default()
            },
            None,
            1,
        )
        .unwrap();
    let ctx = db.timeline_context(last_a[0].id, 2).unwrap();
    assert_eq!(
        ctx.iter().map(|r| r.event.time_ns).collect::<Vec<_>>(),
        [1_197, 1_198, 1_199]
    );
    assert!(db.timeline_context(-5, 3).unwrap().is_empty());
    // What the timeline was built from.
    db.record_timeline_item("item-1", "host-a", "auth.log", 200, 3, None)
        .unwrap();
    db.record_timeline_item("item-1", "host-a", "auth.log", 199, 4, Some("cut short"))
        .unwrap();
    db.record_timeline_item("item-2", "host-b", "syslog", 1, 0, None)
        .unwrap();
    let items = db.timeline_items(Some("host-a")).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0]["events"].clone(), items[0]["error"].clone()),
        (199.into(), "cut short".into())
    );
    assert_eq!(db.timeline_items(None).unwrap().len(), 2);
}

fn a_batch_is_deduplicated_and_counted(db: &dyn MetadataStore, _: Backend) {
    let ev = |t: i64, d: i64, msg: &str| {
        let mut e = Event::new(t, "syslog", "log", msg);
        e.dedup = d;
        e
    };
    // Twice in one batch: the first is kept.
    let n = db
        .insert_timeline(
            "h",
            None,
            &[ev(1, 1, "first"), ev(1, 1, "second"), ev(1, 2, "other")],
        )
        .unwrap();
    assert_eq!(n, 2);
    // The same key on another host, or at another time, is another event.
    assert_eq!(db.insert_timeline("h2", None, &[ev(1, 1, "x")]).unwrap(), 1);
    assert_eq!(
        db.insert_timeline("h", None, &[ev(2, 1, "y"), ev(1, 1, "z")])
            .unwrap(),
        1
    );
    assert_eq!(db.insert_timeline("h", None, &[]).unwrap(), 0);
    let f = Filter {
        host_ids: vec!["h".into()],
        ..Default::default()
    };
    let (rows, _) = db.timeline_page(&f, None, 10).unwrap();
    let msgs: Vec<&str> = rows.iter().map(|r| r.event.message.as_str()).collect();
    assert_eq!(msgs, ["first", "other", "y"]);
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
}

fn a_hundred_thousand_events_in_one_batch(db: &dyn MetadataStore, _: Backend) {
    let evs: Vec<Event> = (0..100_000i64)
        .map(|i| {
            let mut e = Event::new(
                1_700_000_000_000_000_000 + i * 1_000,
                "journal",
                "log",
                format!("line {i}"),
            );
            e.dedup = i % 90_000;
            e.pid = Some(i % 300);
            e
        })
        .collect();
    let start = std::time::Instant::now();
    // Keys repeat after 90 000 only where the time repeats too: none do, so all are new.
    assert_eq!(db.insert_timeline("h", Some("big"), &evs).unwrap(), 100_000);
    let took = start.elapsed();
    assert_eq!(db.insert_timeline("h", Some("big"), &evs).unwrap(), 0);
    let mut again = evs[..10].to_vec();
    again.extend(evs[..10].iter().map(|e| {
        let mut e = e.clone();
        e.time_ns += 1;
        e
    }));
    assert_eq!(db.insert_timeline("h", None, &again).unwrap(), 10);
    let f = Filter {
        text: Some("LINE 9999".into()),
        ..Default::default()
    };
    let fc = db.timeline_facets(&f).unwrap();
    // "line 9999" and "line 99990".."line 99999".
    assert_eq!(fc.total, 11);
    assert_eq!(
        db.timeline_facets(&Filter::default()).unwrap().total,
        100_010
    );
    eprintln!("100 000 events inserted in {took:?}");
}

fn host_values_are_the_distinct_pairs_of_each_host(db: &dyn MetadataStore, _: Backend) {
    use crate::storage::timeline::HostValue;
    with_events(db);
    let execs = Filter {
        kinds: vec!["process_exec".into()],
        ..Default::default()
    };
    let mut rows = db
        .timeline_host_values(&execs, Column::Exe, None, 1000)
        .unwrap();
    rows.sort_by(|a, b| (&a.host, &a.a).cmp(&(&b.host, &b.a)));
    // host-a has events 0..200: execs are those with i % 5 != 0, exe t{i % 4}.
    let count =
        |lo: i64, hi: i64, m: i64| (lo..hi).filter(|i| i % 5 != 0 && i % 4 == m).count() as u64;
    let want: Vec<HostValue> = [("host-a", 0, 200), ("host-b", 200, 250)]
        .iter()
        .flat_map(|&(h, lo, hi)| {
            (0..4).map(move |m| HostValue {
                host: h.into(),
                a: format!("/usr/bin/t{m}"),
                b: None,
                events: count(lo, hi, m),
            })
        })
        .collect();
    assert_eq!(rows, want);
    // Pairs with a numeric column; rows where either is missing are left out.
    let pairs = db
        .timeline_host_values(
            &Filter::default(),
            Column::User,
            Some(Column::DstPort),
            1000,
        )
        .unwrap();
    assert!(!pairs.is_empty());
    assert!(pairs.iter().all(|r| r.b.as_deref() == Some("22")));
    let total: u64 = pairs.iter().map(|r| r.events).sum();
    assert_eq!(total, 10, "{pairs:?}");
    // One more row than the limit says the answer was cut.
    let cut = db
        .timeline_host_values(&execs, Column::Exe, None, 3)
        .unwrap();
    assert_eq!(cut.len(), 4);
    // Bounded by the filter's hosts and time.
    let one = Filter {
        host_ids: vec!["host-b".into()],
        from_ns: Some(1_200),
        to_ns: Some(1_209),
        ..execs
    };
    let rows = db
        .timeline_host_values(&one, Column::Exe, None, 1000)
        .unwrap();
    assert!(rows.iter().all(|r| r.host == "host-b"));
    let n: u64 = rows.iter().map(|r| r.events).sum();
    assert_eq!(n, (200..=209).filter(|i| i % 5 != 0).count() as u64);
}
