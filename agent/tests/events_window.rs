//! How much of the flight recorder a collection carries: the profile's window (volatile 15
//! minutes, memory an hour, triage a day), the caller's when given, none for 0; the item says
//! which window it holds and how many bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cairn_agent::collect::{plan, CollectOptions, Journal};
use cairn_agent::flight_recorder::{now_ns, FlightRecorder, RecorderConfig};
use cairn_protocol::manifest::{CollectRequest, HostIdentity, ItemKind};
use std::time::Duration;

fn request(profile: &str) -> CollectRequest {
    CollectRequest {
        collection_id: uuid::Uuid::new_v4().to_string(),
        profile: profile.into(),
        reason: "test".into(),
        requested_by: "test".into(),
        paths: vec!["/etc/hostname".into()],
        pid: None,
        container_id: None,
        devices: Vec::new(),
    }
}

/// A journal with one event 2 hours ago, one 30 minutes ago and one a minute ago.
fn journal(dir: &std::path::Path) -> Journal {
    let mut r = FlightRecorder::open(dir, RecorderConfig::default()).unwrap();
    let min = 60 * 1_000_000_000i64;
    for (ago, what) in [(120, "two-hours"), (30, "half-hour"), (1, "minute")] {
        r.append(
            now_ns() - ago * min,
            format!("{{\"e\":\"{what}\"}}").as_bytes(),
        )
        .unwrap();
    }
    r.flush().unwrap();
    Journal {
        recorder: None,
        dir: dir.to_path_buf(),
        window: Duration::from_secs(7 * 24 * 3600),
    }
}

/// The events item of a plan of `profile`, produced: (its text, its details).
fn events(profile: &str, opts: &CollectOptions) -> Option<(String, serde_json::Value)> {
    let p = plan(&request(profile), opts);
    let item = p
        .items
        .into_iter()
        .find(|i| i.header.kind == ItemKind::EventJournal)?;
    let mut bytes = Vec::new();
    let m = item
        .produce(&HostIdentity::default(), &Default::default(), |c| {
            bytes.extend_from_slice(&c.verify().unwrap());
            true
        })
        .unwrap();
    Some((
        String::from_utf8(bytes).unwrap(),
        serde_json::Value::Object(m.header.source.details),
    ))
}

#[test]
fn the_window_is_the_profiles_unless_the_caller_gives_one() {
    let d = tempfile::tempdir().unwrap();
    let opts = CollectOptions {
        journal: Some(journal(&d.path().join("journal"))),
        ..Default::default()
    };
    let (text, details) = events("volatile", &opts).unwrap();
    assert!(
        text.contains("minute") && !text.contains("half-hour"),
        "{text}"
    );
    assert_eq!(details["window_secs"], 900);
    assert_eq!(details["window_set_by"], "profile volatile");
    assert_eq!(details["events"], 1);
    assert_eq!(details["bytes"], text.len() as u64);

    let (text, details) = events("file", &opts).unwrap();
    assert_eq!(details["window_secs"], 900, "{text}");

    // The triage profile carries the day.
    let (text, details) = events(
        "triage",
        &CollectOptions {
            disk: cairn_agent::capture::disk::DiskOptions {
                root: d.path().join("empty-root"),
                ..Default::default()
            },
            ..opts.clone()
        },
    )
    .unwrap_or_else(|| panic!("no events item"));
    assert_eq!(details["window_secs"], 86400);
    assert!(
        text.contains("two-hours") && text.contains("minute"),
        "{text}"
    );

    // The caller's window wins; 0 is none at all.
    let given = CollectOptions {
        events_window_secs: Some(45 * 60),
        ..opts.clone()
    };
    let (text, details) = events("volatile", &given).unwrap();
    assert!(
        text.contains("half-hour") && !text.contains("two-hours"),
        "{text}"
    );
    assert_eq!(details["window_set_by"], "request");
    let none = CollectOptions {
        events_window_secs: Some(0),
        ..opts
    };
    assert!(events("volatile", &none).is_none());
}

#[test]
fn a_profile_file_sets_its_window_and_one_without_takes_the_agents() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("root/etc")).unwrap();
    std::fs::write(d.path().join("root/etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let profiles = d.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("quiet.toml"),
        "name = \"quiet\"\nevents_window_secs = 0\n[[artifact]]\npaths = [\"/etc/hosts\"]\n",
    )
    .unwrap();
    std::fs::write(
        profiles.join("plain.toml"),
        "name = \"plain\"\n[[artifact]]\npaths = [\"/etc/hosts\"]\n",
    )
    .unwrap();
    let mut j = journal(&d.path().join("journal"));
    j.window = Duration::from_secs(40 * 60);
    let opts = CollectOptions {
        journal: Some(j),
        disk: cairn_agent::capture::disk::DiskOptions {
            root: d.path().join("root"),
            profile_dirs: vec![profiles],
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(events("quiet", &opts).is_none());
    let (text, details) = events("plain", &opts).unwrap();
    assert_eq!(details["window_secs"], 2400);
    assert_eq!(details["window_set_by"], "agent configuration");
    assert!(
        text.contains("half-hour") && !text.contains("two-hours"),
        "{text}"
    );
}
