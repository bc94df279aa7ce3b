//! The fuzzer itself: it finds a planted bug and saves the input, it flags an allocation out
//! of proportion, and the shared file gives back the input a dead worker was running.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cairn_fuzz::engine::{self, Finding, NoPublish, Publish, Target};
use std::time::Duration;

fn planted(data: &[u8]) -> u64 {
    // A decoder with a bug two mutations deep: a length it trusts.
    if data.len() > 4 && data[0] == b'L' {
        let n = data[1] as usize;
        let _ = data[2..2 + n].len();
    }
    u64::from(data.first().copied().unwrap_or(0))
}

fn hungry(data: &[u8]) -> u64 {
    let n = if data.first() == Some(&b'!') {
        256 << 20
    } else {
        16
    };
    let v = vec![0u8; n];
    v.len() as u64
}

fn target(name: &'static str, run: fn(&[u8]) -> u64) -> Target {
    Target {
        name,
        about: "test",
        max_len: 64,
        timeout: Duration::from_secs(5),
        alloc_floor: 1 << 20,
        alloc_per_byte: 16,
        dict: &[b"L"],
        run,
    }
}

#[test]
fn a_planted_bug_is_found_and_its_input_saved() {
    let dir = tempfile::tempdir().unwrap();
    let t = target("planted", planted);
    let stats = engine::fuzz(
        &t,
        vec![b"hello world".to_vec()],
        Duration::from_secs(3),
        42,
        dir.path(),
        &mut NoPublish,
    )
    .unwrap();
    assert!(stats.inputs > 1000, "{stats:?}");
    assert_eq!(stats.crashes.len(), 1, "one bug, saved once: {stats:?}");
    let c = &stats.crashes[0];
    assert!(c.new);
    assert!(c.finding.contains("out of range"), "{}", c.finding);
    let name = c.path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("crash-") && name.len() == 6 + 64, "{name}");
    let saved = std::fs::read(&c.path).unwrap();
    assert!(matches!(
        engine::run_one(&t, &saved),
        Err(Finding::Panic(_))
    ));
}

#[test]
fn an_allocation_out_of_proportion_is_a_finding() {
    let t = target("hungry", hungry);
    assert!(engine::run_one(&t, b"ok").is_ok());
    match engine::run_one(&t, b"!") {
        Err(Finding::Alloc { peak, .. }) => assert!(peak >= 256 << 20),
        other => panic!("expected an allocation finding, got {other:?}"),
    }
}

#[test]
fn the_shared_file_gives_back_the_last_input() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    cairn_fuzz::shared::create(&state, 32).unwrap();
    {
        let mut s = cairn_fuzz::shared::SharedInput::open(&state).unwrap();
        s.publish(1, b"first input");
        s.publish(2, b"the one that hung");
    }
    let (seq, input) = cairn_fuzz::shared::read(&state).unwrap();
    assert_eq!(seq, 2);
    assert_eq!(input, b"the one that hung");
}
