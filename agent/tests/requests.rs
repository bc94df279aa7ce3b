//! What a collection request may name, checked on the host: relative paths and things that
//! are not block devices are refused with an error per entry, and a request naming tens of
//! thousands of files holds one of them open at a time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cairn_agent::collect::{plan, CollectOptions};
use cairn_protocol::manifest::{CollectRequest, ItemStatus};

fn request(profile: &str, paths: Vec<String>, devices: Vec<String>) -> CollectRequest {
    CollectRequest {
        collection_id: uuid::Uuid::new_v4().to_string(),
        profile: profile.into(),
        reason: "test".into(),
        requested_by: "test".into(),
        paths,
        pid: None,
        container_id: None,
        devices,
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_relative_path_is_refused_not_resolved_against_the_working_directory() {
    let d = tempfile::tempdir().unwrap();
    // What `../../../../etc/shadow` would have reached from the agent's working directory.
    std::env::set_current_dir(d.path()).unwrap();
    let good = d.path().join("good.txt");
    std::fs::write(&good, b"fine").unwrap();
    let req = request(
        "file",
        vec![
            "../../../../etc/shadow".into(),
            "good.txt".into(),
            good.display().to_string(),
        ],
        vec![],
    );
    let p = plan(&req, &CollectOptions::default());
    assert_eq!(p.items.len(), 1, "only the absolute path is collected");
    assert_eq!(p.errors.len(), 2, "{:?}", p.errors);
    assert!(p.errors[0].contains("\"../../../../etc/shadow\": a relative path"));
    assert!(p.errors[1].contains("\"good.txt\": a relative path"));
    assert!(p.errors.iter().all(|e| e.contains("absolute path")));
}

#[test]
fn devices_that_are_not_block_devices_under_dev_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let req = request(
        "disk",
        vec![],
        vec![
            "/etc/passwd".into(),
            img.display().to_string(),
            "/dev/zero".into(),
            "sda".into(),
        ],
    );
    let p = plan(&req, &CollectOptions::default());
    let without_journal: Vec<_> = p
        .items
        .iter()
        .filter(|i| i.header.source.name != "events.jsonl")
        .collect();
    assert!(without_journal.is_empty(), "nothing is imaged");
    assert_eq!(p.errors.len(), 4, "{:?}", p.errors);
    assert!(p.errors[0].starts_with("/etc/passwd: not a block device under /dev"));
    assert!(p.errors[1].contains("not a block device under /dev"));
    assert!(p.errors[2].contains("/dev/zero: is a character device, not a block device"));
    assert!(p.errors[3].contains("relative path"));
}

#[test]
fn fifty_thousand_paths_are_planned_and_read_one_open_file_at_a_time() {
    let d = tempfile::tempdir().unwrap();
    let n = 50_000;
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        let p = d.path().join(format!("f{i}"));
        std::fs::write(&p, format!("file {i}\n")).unwrap();
        paths.push(p.display().to_string());
    }
    // Far fewer descriptors than paths: holding every file open would fail with EMFILE.
    let limit = 512;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, limit, limit)
        .unwrap();
    let before = open_fds();
    let req = request("file", paths, vec![]);
    let p = plan(&req, &CollectOptions::default());
    assert!(
        p.errors.is_empty(),
        "{} errors, first {:?}",
        p.errors.len(),
        p.errors.first()
    );
    assert_eq!(p.items.len(), n);
    assert!(
        open_fds() <= before + 8,
        "{} descriptors open after planning (before: {before})",
        open_fds()
    );
    // More items than descriptors allowed, each opened when produced and closed after.
    let host = cairn_protocol::manifest::HostIdentity::default();
    for (i, item) in p.items.into_iter().take(limit as usize + 100).enumerate() {
        let mut raw = Vec::new();
        let m = item
            .produce(&host, &Default::default(), |c| {
                raw.extend_from_slice(&c.verify().unwrap());
                true
            })
            .unwrap();
        assert_eq!(m.status, ItemStatus::Complete, "{:?}", m.error);
        assert_eq!(raw, format!("file {i}\n").as_bytes());
    }
    assert!(open_fds() <= before + 8, "{} descriptors open", open_fds());
}

#[test]
fn a_file_replaced_after_planning_is_not_read() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("victim");
    std::fs::write(&p, b"the original").unwrap();
    let req = request("file", vec![p.display().to_string()], vec![]);
    let mut items = plan(&req, &CollectOptions::default()).items;
    let item = items.remove(0);
    // Replaced by another file (another inode) before its turn comes.
    let other = d.path().join("other");
    std::fs::write(&other, b"planted").unwrap();
    std::fs::rename(&other, &p).unwrap();
    let host = cairn_protocol::manifest::HostIdentity::default();
    let m = item.produce(&host, &Default::default(), |_| true).unwrap();
    assert_eq!(m.status, ItemStatus::Failed);
    assert!(
        m.error
            .as_deref()
            .unwrap_or("")
            .contains("replaced between planning and reading"),
        "{:?}",
        m.error
    );
}
