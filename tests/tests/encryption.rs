//! Evidence encrypted at rest: with `encrypt_at_rest = true` in `collector.toml`, every chunk
//! on the collector's disk is an age file unreadable without the data directory's evidence
//! key, and the evidence still comes back byte for byte, verified, through the API.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use cairn_harness::*;

#[test]
fn chunks_are_encrypted_on_disk_and_read_back_whole() {
    let work = workdir("encryption").unwrap();
    let collector = Collector::start_in(
        &Bins::beside_test_exe().unwrap(),
        &work.path().join("collector"),
        |data| {
            std::fs::write(data.join("collector.toml"), "encrypt_at_rest = true\n")?;
            Ok(())
        },
    )
    .unwrap();
    let log = std::fs::read_to_string(&collector.log).unwrap();
    assert!(
        log.contains("stored encrypted to the evidence key age1"),
        "{log}"
    );
    let mut agent = Agent::enroll(&collector, work.path()).unwrap();
    agent.run().unwrap();
    let host = agent
        .wait_connected(&collector, Duration::from_secs(60))
        .unwrap();
    // A file whose content is easy to look for on disk.
    let secret = work.path().join("shadow");
    let marker = "root:$6$CAIRNMARKER$xyz:19000:0:99999:7:::";
    std::fs::write(&secret, marker.repeat(2000)).unwrap();
    let c = collector
        .collect_wait(
            &host,
            "file",
            "encrypted at rest",
            &[&secret],
            Duration::from_secs(180),
        )
        .unwrap();
    assert_eq!(c["status"], "sealed", "{}", summary(&c));
    let item = items(&c)
        .into_iter()
        .find(|i| i["source"]["name"] == "shadow")
        .unwrap();

    // Every stored chunk is an age file, and the marker is nowhere on disk.
    let mut chunks = 0;
    let mut stack = vec![collector.data.join("chunks")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                bytes.starts_with(b"age-encryption.org/v1\n"),
                "{} is not encrypted",
                p.display()
            );
            assert!(!bytes.windows(11).any(|w| w == b"CAIRNMARKER"));
            chunks += 1;
        }
    }
    assert!(chunks > 0, "no chunk files");
    // `age` itself decrypts them with the evidence key (a format other tools read).
    if have_command("age") {
        let any = std::fs::read_dir(collector.data.join("chunks"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .next()
            .unwrap()
            .path();
        let mut cmd = Command::new("age");
        cmd.arg("-d")
            .arg("-i")
            .arg(collector.data.join("evidence.age-key"))
            .arg(&any);
        let out = run(cmd, Duration::from_secs(60)).unwrap();
        assert!(out.success(), "{}", out.describe("age -d"));
    }
    // The API serves the clear bytes, verified.
    let out = work.path().join("shadow.out");
    collector.export(&s(&item, "id").unwrap(), &out).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), marker.repeat(2000));
    let v = collector
        .cli_raw(
            &["custody", "verify", &s(&c, "id").unwrap()],
            Duration::from_secs(120),
        )
        .unwrap();
    assert!(v.success(), "{}", v.describe("custody verify"));
}
