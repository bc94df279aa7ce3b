//! Every saved crash and every seed, replayed through its target: a crash once fixed stays
//! fixed, and the corpus stays inputs each decoder reads without a finding.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cairn_fuzz::engine::{self, read_dir_files, run_one};
use cairn_fuzz::targets::{self, corpus_dir, regressions_dir};
use std::path::PathBuf;
use std::sync::mpsc;

#[test]
fn every_saved_crash_and_every_seed_runs_clean() {
    engine::quiet_panics();
    let mut failures = Vec::new();
    let mut replayed = 0;
    for t in targets::all() {
        let mut files: Vec<(PathBuf, Vec<u8>)> = read_dir_files(&corpus_dir(t.name)).unwrap();
        files.extend(read_dir_files(&regressions_dir(t.name)).unwrap());
        let paths: Vec<PathBuf> = files.iter().map(|f| f.0.clone()).collect();
        let limit = t.timeout * 4;
        let (tx, rx) = mpsc::channel();
        // One thread per target, so a hang is reported with its input instead of hanging here.
        std::thread::spawn(move || {
            let t = targets::find(t.name).unwrap();
            for (_, data) in files {
                if tx.send(run_one(&t, &data)).is_err() {
                    return;
                }
            }
        });
        for path in paths {
            replayed += 1;
            match rx.recv_timeout(limit) {
                Ok(Ok(_)) => {}
                Ok(Err(finding)) => failures.push(format!("{}: {finding}", path.display())),
                Err(_) => {
                    failures.push(format!("{}: still running after {limit:?}", path.display()));
                    break;
                }
            }
        }
    }
    cairn_fuzz::targets::offline::clean_up();
    assert!(replayed > 0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_target_has_seeds() {
    let bare: Vec<&str> = targets::all()
        .iter()
        .filter(|t| read_dir_files(&corpus_dir(t.name)).unwrap().is_empty())
        .map(|t| t.name)
        .collect();
    assert!(bare.is_empty(), "targets without a seed corpus: {bare:?}");
}

/// The containment seeds are the messages they are named for, and the requests pass the
/// check: seeds that had drifted into parse errors would leave the checks unfuzzed.
#[test]
fn containment_seeds_reach_the_checks() {
    use cairn_protocol::containment::Allow;
    use cairn_protocol::wire::Message;
    for (_, data) in read_dir_files(&corpus_dir("contain_request")).unwrap() {
        match serde_json::from_slice::<Message>(&data).unwrap() {
            Message::Contain(req) => assert_eq!(req.check(), Ok(()), "{req:?}"),
            other => panic!("not a contain request: {other:?}"),
        }
    }
    for (path, data) in read_dir_files(&corpus_dir("contain_outcome")).unwrap() {
        let m = serde_json::from_slice::<Message>(&data).unwrap();
        assert!(
            matches!(m, Message::Contained(_) | Message::ContainedAck { .. }),
            "{}: {m:?}",
            path.display()
        );
    }
    for (path, data) in read_dir_files(&corpus_dir("allow_spec")).unwrap() {
        let spec = String::from_utf8(data).unwrap();
        assert!(Allow::parse_spec(&spec).is_ok(), "{}", path.display());
    }
}
